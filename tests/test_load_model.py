"""load_model: sources, convert-once, model type detection and the errors a bad checkpoint gets."""

import json
import logging
import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors.numpy import load_file, save_file

from mlx_tts.manifest import MANIFEST
from mlx_tts.quantize import quantize_model
from mlx_tts.utils import (
    DEFAULT_MODEL,
    MODEL_TYPES,
    ModelLoadError,
    cache_dir,
    detect_model_type,
    load_model,
    model_package,
    read_config,
    resolve_model_path,
    save_model,
)


def copy_checkpoint(src, dst, edit):
    """A copy of the tiny checkpoint whose torch-layout weights went through `edit(dict)`."""
    shutil.copytree(src, dst)
    weights = load_file(str(dst / "kokoro-v1_0.safetensors"))
    edit(weights)
    save_file(weights, str(dst / "kokoro-v1_0.safetensors"))
    return dst


def test_converts_once_into_mlx_layout(tiny_checkpoint, tiny_model):
    converted = tiny_model.path
    assert converted != tiny_checkpoint and converted.parent == cache_dir() / "converted"
    config = read_config(converted)
    assert config["layout"] == "mlx" and config["model_type"] == "kokoro" and config["sample_rate"] == 24000
    assert sorted(p.name for p in (converted / "voices").iterdir()) == ["af_test.safetensors", "am_test.safetensors"]
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    again = load_model(tiny_checkpoint)
    assert again.path == converted and (converted / "model.safetensors").stat().st_mtime_ns == stamp
    for (name, a), (_, b) in zip(tree_flatten(tiny_model.parameters()), tree_flatten(again.parameters())):
        assert mx.array_equal(a, b), name


def test_loading_the_converted_folder_directly(tiny_model):
    direct = load_model(tiny_model.path)
    assert direct.path == tiny_model.path and direct.model_type == "kokoro"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w: w.pop("bert_encoder.bias"), "bert_encoder.bias"),
        (lambda w: w.update({"decoder.extra.weight": np.zeros(3, np.float32)}), "decoder.extra.weight"),
        (lambda w: w.update({"bert_encoder.bias": np.zeros(7, np.float32)}), "bert_encoder.bias"),
    ],
    ids=["missing", "extra", "shape"],
)
def test_bad_checkpoint_names_the_key(tiny_checkpoint, tmp_path, edit, message):
    bad = copy_checkpoint(tiny_checkpoint, tmp_path / "bad", edit)
    with pytest.raises((ModelLoadError, ValueError, KeyError)) as error:
        load_model(bad)
    assert message in str(error.value)


def test_model_type_comes_from_config_content(tmp_path, tiny_checkpoint):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ModelLoadError, match="unknown model type 'whisper'"):
        load_model(tmp_path)
    # A Kokoro config is detected without a model_type, whatever the folder is called.
    renamed = shutil.copytree(tiny_checkpoint, tmp_path / "some-csm-model")
    assert load_model(renamed).model_type == "kokoro"


def test_missing_config_and_bad_json(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path)


def test_unreachable_repo_names_it_and_how_to_provide_it():
    with pytest.raises(ModelLoadError) as error:
        resolve_model_path("someone/no-such-tts-model")
    assert "someone/no-such-tts-model" in str(error.value) and "hf download" in str(error.value)
    with pytest.raises(ModelLoadError, match="neither a local folder nor"):
        resolve_model_path("not-a-repo-id")


def test_default_model_falls_back_to_the_embedded_one_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="mlx_tts"):
        folder = resolve_model_path(DEFAULT_MODEL)
    assert "embedded" in caplog.text and DEFAULT_MODEL in caplog.text
    config = read_config(folder)
    assert config["layout"] == "mlx" and config["model_type"] == "kokoro"
    assert {p.stem for p in (folder / "voices").iterdir()} == {
        "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"
    }


def test_quantized_folder_with_missing_scales_names_the_layer(tiny_checkpoint, tmp_path):
    model = load_model(tiny_checkpoint)
    weights, config = quantize_model(model, model.config, group_size=64, bits=8)
    folder = save_model(tmp_path / "q8", weights, config, source=model)
    assert load_model(folder).config["quantization"]["bits"] == 8
    layer = next(k for k in weights if k.endswith(".scales")).rsplit(".", 1)[0]
    weights = dict(mx.load(str(folder / "model.safetensors")))
    del weights[f"{layer}.scales"]
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / MANIFEST).unlink()  # a deliberate edit (else the manifest refuses the changed file first)
    with pytest.raises(ModelLoadError, match=layer.replace(".", r"\.")):
        load_model(folder)


@pytest.mark.reference
def test_hexgrad_pth_layout_loads_the_same_weights(tiny_checkpoint, tiny_model, tmp_path):
    import torch

    flat = load_file(str(tiny_checkpoint / "kokoro-v1_0.safetensors"))
    nested = {}
    for key, value in flat.items():
        component, inner = key.split(".", 1)
        nested.setdefault(component, {})[f"module.{inner}"] = torch.from_numpy(value)
    folder = tmp_path / "hexgrad"
    shutil.copytree(tiny_checkpoint / "voices", folder / "voices")
    shutil.copy(tiny_checkpoint / "config.json", folder / "config.json")
    torch.save(nested, folder / "kokoro-v1_0.pth")
    from_pth = load_model(folder)
    for (name, a), (_, b) in zip(tree_flatten(tiny_model.parameters()), tree_flatten(from_pth.parameters())):
        assert mx.array_equal(a, b), name


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_package_has_the_contract_load_model_uses(model_type):
    package = model_package(model_type)
    for name in ("ModelArgs", "Model", "is_config", "convert"):
        assert hasattr(package, name), f"mlx_tts.models.{model_type} has no {name}"
    assert callable(package.Model.sanitize) and callable(package.ModelArgs.from_dict)
    assert detect_model_type({"model_type": model_type}) == model_type
