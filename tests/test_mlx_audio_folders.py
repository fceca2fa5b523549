"""Folders written by MLX-Audio (see tests/mlx_audio_layout.py for its names and shapes): Kokoro float32,
bfloat16, 8-bit and 4-bit (from the embedded Kokoro-82M's real weights)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_tts.models.kokoro.convert import detect_layout
from mlx_tts.quality import kokoro_take, log_mel_distance
from mlx_tts.quantize import full_precision_layers
from mlx_tts.utils import EMBEDDED_MODEL, ModelLoadError, cache_dir, load_model, read_config
from mlx_audio_layout import (
    as_dtype, dequantized, mlx_audio_kokoro_weights, mlx_audio_quantize, write_mlx_audio_folder,
)

TEXT, VOICE = "The quick brown fox jumps over the lazy dog.", "jf_alpha"
KINDS = ("float32", "bfloat16", "8bit", "4bit")


# ---- Kokoro ----

@pytest.fixture(scope="module")
def ours():
    return load_model(EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def our_take(ours):
    return kokoro_take(ours, TEXT, VOICE, seed=0)


@pytest.fixture(scope="module")
def mlx_audio_float(ours):
    return mlx_audio_kokoro_weights(ours)


def kokoro_folder(folder, ours, weights, quantization=None):
    return write_mlx_audio_folder(folder, weights, {**ours.config, "model_type": "kokoro"}, quantization,
                                  side_files=[ours.path / "voices"])


@pytest.fixture(scope="module")
def kokoro_folders(ours, mlx_audio_float, tmp_path_factory):
    """kind -> (MLX-Audio folder, its weights, its quantization block)."""
    root = tmp_path_factory.mktemp("mlx-audio-kokoro")
    folders = {}
    for kind in KINDS:
        if kind.endswith("bit"):
            weights, quantization = mlx_audio_quantize(mlx_audio_float, bits=int(kind[:-3]))
        else:
            weights, quantization = as_dtype(mlx_audio_float, getattr(mx, kind)), None
        folders[kind] = (kokoro_folder(root / f"Kokoro-82M-{kind}", ours, weights, quantization), weights, quantization)
    return folders


def test_mlx_audio_layout_is_read_from_the_weights(ours, mlx_audio_float):
    assert len(mlx_audio_float) == 548  # Kokoro-82M's tensor count, MLX-Audio's unused pooler included
    assert detect_layout(mlx_audio_float, ours.config, "src") == "mlx_audio"
    quantized, _ = mlx_audio_quantize(mlx_audio_float, bits=4)
    assert detect_layout(quantized, ours.config, "src") == "mlx_audio"  # the convolutions are float: shapes tell


def test_torch_layout_is_read_from_the_weights(tiny_checkpoint):
    from mlx_tts.checkpoint import load_safetensors

    weights = load_safetensors([tiny_checkpoint / "kokoro-v1_0.safetensors"])
    assert detect_layout(weights, read_config(tiny_checkpoint), "src") == "torch"


def test_mixed_layouts_are_refused_naming_both(ours, mlx_audio_float, tmp_path):
    mixed = dict(mlx_audio_float)
    key = "decoder.generator.conv_post.weight_v"
    mixed[key] = mixed[key].swapaxes(1, 2)  # PyTorch's [out, in, kernel] among MLX-Audio's names and shapes
    with pytest.raises(ModelLoadError, match=rf"ambiguous Kokoro checkpoint.*PyTorch's \({key}\) and MLX-Audio's \(decoder"):
        load_model(kokoro_folder(tmp_path / "mixed", ours, mixed))
    only_albert = {k: v for k, v in mlx_audio_float.items() if k.startswith("bert.")}
    with pytest.raises(ModelLoadError, match="can't tell the layout"):
        detect_layout(only_albert, ours.config, "src")


@pytest.mark.parametrize("kind", KINDS)
def test_mlx_audio_kokoro_folders_load_and_speak_like_ours(kind, kokoro_folders, ours, our_take, tmp_path):
    folder, weights, quantization = kokoro_folders[kind]
    model = load_model(folder)
    assert model.path.parent == cache_dir() / "converted" and model.config["layout"] == "mlx"
    assert "quantization_config" not in model.config
    take = kokoro_take(model, TEXT, VOICE, seed=0)
    distance = log_mel_distance(our_take.audio, take.audio)
    if kind == "float32":
        assert np.array_equal(take.durations, our_take.durations) and distance < 0.01, distance
    elif kind == "bfloat16":
        assert model.bert.encoder.layer.ffn.weight.dtype == mx.bfloat16
        assert np.array_equal(take.durations, our_take.durations) and distance < 1.5, distance  # measured 0.70
    else:
        block = model.config["quantization"]
        assert {k: block[k] for k in ("group_size", "bits", "mode")} == quantization
        # MLX-Audio's convolutions and LSTMs have no quantized form: listed as full precision, as ours lists them
        assert {"predictor.lstm", "decoder.generator.ups.0", "decoder.generator.m_source.l_linear"} <= set(
            full_precision_layers(model.config))
        ffn = model.bert.encoder.layer.ffn
        assert isinstance(ffn, nn.QuantizedLinear) and ffn.bits == quantization["bits"]
        packed = weights["bert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"]
        assert mx.array_equal(ffn.weight, packed)  # taken as packed, never dequantized and quantized again
        if kind == "8bit":
            assert np.array_equal(take.durations, our_take.durations) and distance < 1.5, distance  # measured 0.51
        else:  # 4 bits move a duration (see bench/README.md): the same network with its weights dequantized
            same = load_model(kokoro_folder(tmp_path / "dequantized", ours, dequantized(weights, quantization)))
            same_take = kokoro_take(same, TEXT, VOICE, seed=0)
            assert np.array_equal(take.durations, same_take.durations)
            assert log_mel_distance(same_take.audio, take.audio) < 0.1
