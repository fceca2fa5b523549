"""A public studio (`python app.py --public`) through `gradio_client`, tried as a visitor would: server paths,
free regexes and files outside Gradio's own are all refused, nothing is written, and the quantized model
comes back as a zip download."""

import json
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from mlx_tts.cache import cache_dir

from studio_server import running_studio

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("studio_public")


@pytest.fixture(scope="module")
def url(work_dir):
    with running_studio(work_dir, "--public", "--output-dir", str(work_dir / "out")) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False, httpx_kwargs={"timeout": 300})


def refusal(client, **kwargs) -> str:
    with pytest.raises(AppError) as error:
        client.predict(**kwargs)
    assert "Traceback" not in str(error.value)
    return str(error.value)


def test_the_page_says_public_mode(url):
    assert "Public mode" in httpx.get(url + "config").text


def test_no_endpoint_takes_a_server_path_and_saving_writes_nothing(client, work_dir):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert "/quant_save" not in endpoints and "/quant_download" in endpoints
    assert all(p["parameter_name"] != "folder" for e in endpoints.values() for p in e["parameters"])
    with pytest.raises(ValueError):  # gradio_client knows no such endpoint
        client.predict(bits=8, group_size=64, recipe="uniform", folder=str(work_dir / "saved"), api_name="/quant_save")
    response = httpx.post(client.src + "gradio_api/call/quant_save",
                          json={"data": ["prince-canuma/Kokoro-82M", "8", "64", "uniform", str(work_dir / "saved")]})
    assert response.status_code >= 400
    assert not (work_dir / "saved").exists() and not (work_dir / "out").exists()


def test_no_long_form_accordion(client, url):
    """A whole book per request would bypass public mode's bounds on text length: no accordion, no endpoint."""
    assert "/kokoro_longform" not in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    config = httpx.get(url + "config").text
    assert "Long-form" not in config and "longform-file" not in config
    response = httpx.post(client.src + "gradio_api/call/kokoro_longform", json={"data": [None] * 9})
    assert response.status_code >= 400


def test_models_and_voices_only_from_the_lists(client):
    assert "not in the list of choices" in refusal(client, model_id="/etc", api_name="/kokoro_load")
    assert "not in the list of choices" in refusal(client, model_id=str(cache_dir()), api_name="/csm_load")
    message = refusal(client, text="こんにちは。", voice="/etc/passwd", lang_code="j", api_name="/kokoro_generate")
    assert "not one of this model's voices or an upload" in message


def test_no_free_regex(client):
    message = refusal(client, text="a" * 100, voice="jf_alpha", lang_code="j", split_pattern="(a+)+b",
                      api_name="/kokoro_generate")
    assert "not in the list of choices" in message and "sentences" in message


def test_only_gradio_files_are_served(client, url):
    take, *_ = client.predict(text="こんにちは。", voice="jf_alpha", lang_code="j", seed=0,
                              split_pattern="sentences", api_name="/kokoro_generate")
    assert Path(take).stat().st_size > 1000  # fetched through /gradio_api/file= by the client
    cached = next((cache_dir() / "embedded").glob("*/config.json"))  # the model the studio loaded
    for path in ["/etc/passwd", str(cached), str(Path(__file__).resolve())]:
        response = httpx.get(f"{url}gradio_api/file={path}")
        assert response.status_code == 403, path


def test_the_quantized_model_is_a_zip_download(client):
    archive = client.predict(bits="8", group_size="64", recipe="uniform", api_name="/quant_download")
    with zipfile.ZipFile(archive) as zipped:
        config_name = next(n for n in zipped.namelist() if n.endswith("/config.json"))
        assert json.loads(zipped.read(config_name))["quantization"]["bits"] == 8
        assert any(n.endswith(".safetensors") for n in zipped.namelist())
