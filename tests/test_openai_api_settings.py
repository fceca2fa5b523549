"""The speech API's rules that need no model: which models public and lab mode serve, the bad-request, busy
(503) and key answers, through FastAPI's test client on the API's own routes."""

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import app
from studio.engine import Engine
from studio.openai_api import ApiSettings, SpeechAPI, openai_voice_table
from studio.policy import MAX_SEED, PUBLIC, Policy

BODY = {"model": "tts-1", "input": "こんにちは。", "voice": "jf_alpha"}


def client_for(settings: ApiSettings, engine=None):
    api = SpeechAPI(engine or Engine(), settings)
    return api, TestClient(FastAPI(routes=api.router().routes))


def test_lab_mode_serves_every_model_public_mode_only_kokoro_unless_allowed():
    assert ApiSettings("kokoro-folder").models == ("kokoro", "tts-1", "tts-1-hd", "csm")
    assert ApiSettings("kokoro-folder", public=True).models == ("kokoro", "tts-1", "tts-1-hd")
    assert ApiSettings("kokoro-folder", allowed_models=["kokoro", "csm"]).models == ("kokoro", "csm")
    _, client = client_for(ApiSettings("kokoro-folder", public=True))
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["kokoro", "tts-1", "tts-1-hd"]
    response = client.post("/v1/audio/speech", json={**BODY, "model": "csm"})
    assert response.status_code == 404 and "not served here" in response.json()["error"]["message"]


def test_settings_come_from_the_apps_configuration():
    config = SimpleNamespace(model="m", csm_model="c", api_key="", max_queue=3)
    settings = ApiSettings.from_config(config, Policy(PUBLIC, allowed_models=["m"]))
    assert (settings.kokoro_model, settings.csm_model, settings.api_key, settings.max_waiting) == ("m", "c", None, 3)
    assert settings.public and settings.models == ("kokoro", "tts-1", "tts-1-hd")
    assert ApiSettings.from_config(SimpleNamespace(model="m")).models[-1] == "csm"  # no policy: lab


@pytest.mark.parametrize("allowed, served", [((), False), (("org/csm",), True)])
def test_a_public_studio_serves_csm_over_the_api_when_its_allowlist_has_the_csm_model(allowed, served):
    args = app.parse_args(["--public", "--model", "org/kokoro", "--csm-model", "org/csm",
                           *(f"--allow-model={m}" for m in allowed)])
    policy = Policy(args.mode, allowed_models=[args.model, *args.allow_model])  # app.py's adds --csm-model too
    assert ("csm" in ApiSettings.from_config(args, policy).models) is served


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**64])
def test_a_seed_outside_mlxs_range_is_a_bad_request(seed):
    _, client = client_for(ApiSettings("kokoro-folder"))
    response = client.post("/v1/audio/speech", json={**BODY, "seed": seed})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "seed" and str(MAX_SEED) in response.json()["error"]["message"]


def test_csm_is_listed_only_once_its_weights_are_here(tmp_path):
    engine = Engine(policy=Policy(model_roots=[tmp_path]))
    for csm_model in ("mlx-tts-tests/not-in-the-cache", str(tmp_path / "no-csm-here")):  # neither is downloaded
        _, client = client_for(ApiSettings("unused-kokoro", csm_model=csm_model), engine)
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["kokoro", "tts-1", "tts-1-hd"]
    response = client.post("/v1/audio/speech", json={**BODY, "model": "csm", "voice": "0"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_available"


def test_a_request_beyond_the_waiting_slots_gets_503():
    api, client = client_for(ApiSettings("kokoro-folder", max_waiting=1))
    assert api._slots.acquire(blocking=False)  # the one slot is taken by a request in progress
    try:
        response = client.post("/v1/audio/speech", json=BODY)
    finally:
        api._slots.release()
    assert response.status_code == 503
    assert response.json()["error"] == {"message": response.json()["error"]["message"], "type": "server_error",
                                        "param": None, "code": "server_busy"}


@pytest.mark.parametrize("headers, status", [({}, 401), ({"Authorization": "Bearer nope"}, 401),
                                             ({"Authorization": "Basic k"}, 401)])
def test_the_key_is_checked_before_anything_else(headers, status):
    _, client = client_for(ApiSettings("kokoro-folder", api_key="k"))
    assert client.post("/v1/audio/speech", json={}, headers=headers).status_code == status
    assert client.get("/v1/models", headers=headers).status_code == status
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200


def test_openai_voices_take_the_models_voices_of_their_gender_in_turn():
    offline = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    table = openai_voice_table(offline)
    assert table["alloy"] == "jf_alpha" and table["coral"] == "jf_gongitsune" and table["nova"] == "jf_nezumi"
    assert table["onyx"] == "jm_kumo" and set(table.values()) == set(offline)
    assert openai_voice_table(["af_nova", "jf_alpha"])["nova"] == "af_nova"  # the named voice, where it exists


def test_csm_speaks_through_the_api_once_its_weights_are_there(tmp_path):
    from tiny_csm import tiny_mlx_csm_folder

    folder = tiny_mlx_csm_folder(tmp_path / "tiny-csm")
    engine = Engine(policy=Policy(model_roots=[tmp_path]))  # lab mode loads local folders from its roots only
    _, client = client_for(ApiSettings("unused-kokoro", csm_model=str(folder)), engine)
    assert [m["id"] for m in client.get("/v1/models").json()["data"]][-1] == "csm"
    response = client.post("/v1/audio/speech", json={"model": "csm", "input": "hello there", "voice": "1",
                                                       "response_format": "pcm"})
    assert response.status_code == 200, response.text
    assert len(response.content) >= 2 * 1920  # at least one 80 ms frame of 16-bit samples
    for body, param in (({"voice": "jf_alpha"}, "voice"), ({"lexicon": {"a": "b"}}, "lexicon")):
        response = client.post("/v1/audio/speech", json={"model": "csm", "input": "hi", "voice": "0", **body})
        assert response.status_code in (400, 404) and response.json()["error"]["param"] == param
