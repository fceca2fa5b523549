"""Folders written by MLX-Audio (see tests/mlx_audio_layout.py for its names and shapes): Kokoro float32,
bfloat16, 8-bit and 4-bit (from the embedded Kokoro-82M's real weights), and quantized CSM (tiny, random)."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_tts.checkpoint import rope_interleaved_to_half
from mlx_tts.models import csm
from mlx_tts.models.csm.frames import prompt_frames, segment_frames
from mlx_tts.models.kokoro.convert import detect_layout
from mlx_tts.quality import kokoro_take, log_mel_distance
from mlx_tts.quantize import full_precision_layers
from mlx_tts.utils import EMBEDDED_MODEL, ModelLoadError, cache_dir, load_model, read_config

from mlx_audio_layout import (
    as_dtype,
    dequantized,
    mlx_audio_csm_weights,
    mlx_audio_kokoro_weights,
    mlx_audio_quantize,
    write_mlx_audio_folder,
)
from tiny_csm import MIMI_CONFIG, csm_config_dict, make_tokenizer, randomize, speech_like

TEXT, VOICE = "The quick brown fox jumps over the lazy dog.", "jf_alpha"
KINDS = ("float32", "bfloat16", "8bit", "4bit")
DURATION_PROJ = "predictor.duration_proj.linear_layer"


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
        if kind == "4bit":  # with one layer at 8 bits through a per-layer entry (MLX-Audio's module path)
            weights, quantization = mlx_audio_quantize(mlx_audio_float, 4, layer_bits={DURATION_PROJ: 8})
        elif kind == "8bit":
            weights, quantization = mlx_audio_quantize(mlx_audio_float, 8)
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
    message = rf"ambiguous Kokoro checkpoint.*PyTorch's \({key}\) and MLX-Audio's \(decoder"
    with pytest.raises(ModelLoadError, match=message):
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
        fields = ("group_size", "bits", "mode")
        assert {k: block[k] for k in fields} == {k: quantization[k] for k in fields}
        if DURATION_PROJ in quantization:  # the per-layer entry, under our name
            assert block["predictor.duration_proj"] == quantization[DURATION_PROJ]
            assert model.predictor.duration_proj.bits == 8
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


# ---- CSM ----

@pytest.fixture(scope="module")
def tiny_csm():
    config = {**csm_config_dict(), "layout": "mlx"}
    return randomize(csm.Model(csm.ModelArgs.from_dict(config)), seed=1), config


def csm_folder(folder, model, config, weights, quantization=None):
    """An MLX-Audio CSM folder: its checkpoint, and the codec and tokenizer beside it (it holds neither)."""
    config = {k: v for k, v in config.items() if k != "codec_config"}
    write_mlx_audio_folder(folder, weights, config, quantization)
    codec = {k[len("codec."):]: v for k, v in tree_flatten(model.parameters()) if k.startswith("codec.")}
    (folder / "codec").mkdir()
    mx.save_safetensors(str(folder / "codec" / "model.safetensors"), codec)
    (folder / "codec" / "config.json").write_text(json.dumps(dict(model_type="mimi", **MIMI_CONFIG)))
    make_tokenizer(folder / "tokenizer.json")
    return folder


def greedy_codes(model, frames=20) -> np.ndarray:
    codes = np.array(model.codec.encode(speech_like(1.0))[0])
    segments = [segment_frames([96, 5, 6, 7, 97], codes, 32), segment_frames([96, 8, 9, 97], None, 32)]
    tokens, mask = prompt_frames(segments)
    out = list(model.generate(mx.array(tokens)[None], mx.array(mask)[None], frames, csm.make_sampler(temperature=0)))
    assert len(out) == frames
    return np.concatenate([np.array(f) for f in out])


@pytest.mark.parametrize("bits", [4, 8])
def test_mlx_audio_quantized_csm_loads_packed_and_generates_like_its_dequantized_weights(tiny_csm, bits, tmp_path):
    model, config = tiny_csm
    # its head at other bits through a per-layer entry, as MLX-Audio's mixed recipes write them (its module path)
    head_bits = 8 if bits == 4 else 4
    weights, quantization = mlx_audio_quantize(mlx_audio_csm_weights(model), bits,
                                               layer_bits={"model.codebook0_head": head_bits})
    quantized = load_model(csm_folder(tmp_path / f"csm-{bits}bit", model, config, weights, quantization))
    reference = load_model(csm_folder(tmp_path / "dequantized", model, config, dequantized(weights, quantization)))

    assert quantized.path.parent == cache_dir() / "converted" and quantized.config["layout"] == "mlx"
    block = quantized.config["quantization"]
    assert (block["group_size"], block["bits"], block["mode"]) == (64, bits, "affine")
    assert block["codebook0_head"] == {"group_size": 64, "bits": head_bits}
    assert quantized.codebook0_head.bits == head_bits
    # the depth decoder (48 wide) can't take groups of 64, nor does MLX-Audio quantize the codec: listed as ours are
    kept = set(full_precision_layers(quantized.config))
    assert "decoder.layers.0.mlp.gate_proj" in kept and any(path.startswith("codec.") for path in kept)
    layer = quantized.backbone.layers[0]
    assert isinstance(layer.mlp.gate_proj, nn.QuantizedLinear) and layer.mlp.gate_proj.bits == bits
    assert isinstance(quantized.text_embeddings, nn.QuantizedEmbedding)
    # packed as MLX-Audio wrote them: renamed, q/k rows reordered for rotate-half RoPE, never re-quantized
    assert mx.array_equal(layer.mlp.gate_proj.weight, weights["model.backbone.layers.0.mlp.gate_proj.weight"])
    heads = model.args.backbone.num_attention_heads
    for part in ("weight", "scales", "biases"):
        source = weights[f"model.backbone.layers.0.self_attn.q_proj.{part}"]
        assert mx.array_equal(getattr(layer.self_attn.q_proj, part), rope_interleaved_to_half(source, heads)), part

    np.testing.assert_array_equal(greedy_codes(quantized), greedy_codes(reference))


def test_mlx_audio_csm_missing_scales_name_the_layer(tiny_csm, tmp_path):
    model, config = tiny_csm
    weights, quantization = mlx_audio_quantize(mlx_audio_csm_weights(model), 8)
    del weights["model.backbone.layers.1.mlp.down_proj.scales"]
    folder = csm_folder(tmp_path / "broken", model, config, weights, quantization)
    message = r"missing quantization scales/biases for layers: backbone\.layers\.1\.mlp\.down_proj"
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder)
    unquantized = {k: v for k, v in read_config(folder).items() if not k.startswith("quantization")}
    (folder / "config.json").write_text(json.dumps(unquantized))
    with pytest.raises(ModelLoadError, match="quantized .* no `quantization` block"):
        load_model(folder)
