"""quantize_model, quantized folders, the convert CLI and, on the real weights, the quality ordering of bit widths.

Most tests run on the tiny random Kokoro (its decoder keeps Kokoro's real widths, so every layer kind and the
awkward row widths are there) and on a tiny random CSM."""

import json
import logging
import re
import shutil
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from mlx_tts.convert import main as convert_main
from mlx_tts.layers import QuantizedConv, dequantize
from mlx_tts.manifest import MANIFEST
from mlx_tts.models import kokoro
from mlx_tts.models.kokoro import KokoroPipeline
from mlx_tts.models.kokoro.modules import BiLSTM, Conv1d, ConvTranspose1d, QuantizedBiLSTM
from mlx_tts.quantize import EMBEDDINGS, VALID_BITS, VALID_GROUP_SIZES, full_precision_layers, quantize_model
from mlx_tts.utils import EMBEDDED_MODEL, ModelLoadError, load_model, save_model

from tiny_csm import tiny_mlx_csm_folder

QUANTIZED = (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedConv, QuantizedBiLSTM)
FLOAT = (nn.Linear, nn.Embedding, Conv1d, ConvTranspose1d, BiLSTM)
# Relative dequantization error bounds (|W - Q(W)| / |W| over the model), about 1.5x what was measured.
MAX_RELATIVE_ERROR = {2: 0.6, 3: 0.3, 4: 0.14, 5: 0.07, 6: 0.035, 8: 0.009}


def fresh_copy(model):
    """A new model sharing `model`'s (immutable) weight arrays: quantizing it leaves `model` as it is."""
    copy = kokoro.Model(kokoro.ModelArgs.from_dict(model.config))
    copy.update(tree_unflatten(tree_flatten(model.parameters())))
    copy.config, copy.path, copy.model_type = model.config, model.path, model.model_type
    return copy


def float_weights(module) -> list:
    if isinstance(module, BiLSTM):
        return [module.weight_ih, module.weight_hh]
    return [module.weight]


def dense_weights(module) -> list:
    """The float weights a quantized layer stands for, in `float_weights`' order."""
    if isinstance(module, QuantizedBiLSTM):
        matrix = module.matrix()
        H = module.hidden_size
        return [matrix[:, : module.width - H], matrix[:, module.width - H :].reshape(2, 4 * H, H)]
    if isinstance(module, QuantizedConv):
        return [module.matrix().reshape(-1, module.kernel_size, module.group_channels)]
    return [mx.dequantize(module.weight, module.scales, module.biases, module.group_size, module.bits)]


def layers(model) -> dict:
    return {path: m for path, m in model.named_modules() if isinstance(m, QUANTIZED + FLOAT)}


def speak(model, text="Hi.", voice="af_test", seed=0) -> np.ndarray:
    pipeline = KokoroPipeline(lang_code="a", model=model)
    mx.random.seed(seed)
    return np.concatenate([np.asarray(r.audio[0]) for r in pipeline(text, voice=voice)])


def test_spec_example_saves_a_loadable_checkpoint(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "8bit").mkdir()
    model = fresh_copy(tiny_model)
    config = model.config

    weights, config = quantize_model(model, config, group_size=64, bits=8)
    mx.save_safetensors("./8bit/model.safetensors", weights, metadata={"format": "mlx"})

    saved, metadata = mx.load("./8bit/model.safetensors", return_metadata=True)
    assert metadata == {"format": "mlx"} and set(saved) == set(weights)
    assert config["quantization"]["bits"] == 8 and config["quantization"]["group_size"] == 64
    # with its config and voices next to it, the file loads as a quantized model
    (tmp_path / "8bit" / "config.json").write_text(json.dumps(config))
    shutil.copytree(tiny_model.path / "voices", tmp_path / "8bit" / "voices")
    loaded = load_model("./8bit")
    assert isinstance(loaded.decoder.generator.ups[0], QuantizedConv)
    assert isinstance(loaded.predictor.lstm, QuantizedBiLSTM)
    assert isinstance(loaded.bert.encoder.layer.ffn, nn.QuantizedLinear)


@pytest.fixture(scope="module")
def quantized_4bit(tiny_model, tmp_path_factory):
    """The tiny model at 4 bits, group 32, in memory and saved as a folder."""
    model = fresh_copy(tiny_model)
    weights, config = quantize_model(model, model.config, group_size=32, bits=4)
    folder = save_model(tmp_path_factory.mktemp("q4") / "tiny-4bit", weights, config, source=model)
    return model, weights, config, folder


def test_saved_folder_loads_as_the_same_quantized_model_and_generates(tiny_model, quantized_4bit):
    model, weights, config, folder = quantized_4bit
    assert sorted(p.name for p in (folder / "voices").iterdir()) == ["af_test.safetensors", "am_test.safetensors"]
    loaded = load_model(folder)
    assert loaded.config["quantization"] == config["quantization"]
    for path, module in layers(model).items():
        assert type(layers(loaded)[path]) is type(module), path
    for key, value in tree_flatten(loaded.parameters()):
        assert mx.array_equal(value, weights[key]), key
    audio = speak(loaded)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
    np.testing.assert_array_equal(audio, speak(model))  # the folder is the model it was saved from
    # 4 bits and a float32 scale and bias per 32 weights: 6 bits a weight, 19% of float32 (measured 18.95%)
    quantized_bytes = sum(v.nbytes for v in weights.values())
    float_bytes = sum(v.nbytes for _, v in tree_flatten(tiny_model.parameters()))
    assert quantized_bytes < 0.2 * float_bytes


@pytest.mark.parametrize("group_size", VALID_GROUP_SIZES)
@pytest.mark.parametrize("bits", VALID_BITS)
def test_every_bit_width_and_group_size(tiny_model, bits, group_size):
    model = fresh_copy(tiny_model)
    originals = layers(model)
    weights, config = quantize_model(model, model.config, group_size=group_size, bits=bits)
    assert config["quantization"]["bits"] == bits and config["quantization"]["group_size"] == group_size
    kept = set(full_precision_layers(config))
    error = total = 0.0
    for path, module in layers(model).items():
        if path in kept:
            assert type(module) is type(originals[path]), path
            continue
        assert isinstance(module, QUANTIZED) and (module.bits, module.group_size) == (bits, group_size), path
        for before, after in zip(float_weights(originals[path]), dense_weights(module)):
            assert after.shape == before.shape, path
            error += mx.sum((after - before) ** 2).item()
            total += mx.sum(before**2).item()
    assert (error / total) ** 0.5 < MAX_RELATIVE_ERROR[bits]
    assert weights["decoder.generator.conv_post.weight"].dtype == mx.uint32  # packed


@pytest.mark.parametrize("group_size", VALID_GROUP_SIZES)
def test_layers_that_cant_take_the_group_size_are_listed_and_stay_float(tiny_model, group_size, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mlx_tts")
    model = fresh_copy(tiny_model)
    originals = layers(model)
    # expected from the layers' shapes: MLX's Linear/Embedding need whole groups; ours pad rows of >= 1 group
    expected = set()
    for path, m in originals.items():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            takes = m.weight.shape[-1] % group_size == 0
        else:
            takes = m.quantized_width >= group_size
        if not takes:
            expected.add(path)
    assert "decoder.F0_conv" in expected and "decoder.generator.m_source.l_linear" in expected
    # Kokoro's decoder blocks have 3 * 1090 inputs a row: padded, they are quantized at every group size
    assert "decoder.decode.0.conv1" not in expected
    weights, config = quantize_model(model, model.config, group_size=group_size, bits=4)
    assert set(full_precision_layers(config)) == expected
    for path in expected:
        assert f"{path}: rows of " in caplog.text
        assert mx.array_equal(weights[f"{path}.weight"], originals[path].weight), path
    loaded = load_model(save_model(tmp_path / "q", weights, config, source=model))
    for path in expected:
        assert type(layers(loaded)[path]) is type(originals[path]), path


def test_dequantize_is_bit_identical_to_mlx():
    w = mx.random.normal((24, 384), key=mx.random.key(0))
    for bits in VALID_BITS:
        for group_size in VALID_GROUP_SIZES:
            q = mx.quantize(w, group_size, bits)
            expected = mx.dequantize(*q, group_size, bits)
            assert mx.array_equal(dequantize(*q, group_size, bits), expected), (bits, group_size)


def test_quantized_conv_and_lstm_compute_with_their_dequantized_weights():
    mx.random.seed(1)
    x = mx.random.normal((1, 40, 37))
    for conv in (Conv1d(37, 16, 3, padding=2, dilation=2), ConvTranspose1d(37, 16, 4, stride=2, padding=1)):
        q = conv.to_quantized(group_size=32, bits=6)  # rows of 3 or 4 * 37 weights, padded to whole groups
        (dense,) = dense_weights(q)
        conv.update({"weight": dense})
        np.testing.assert_allclose(np.asarray(q(x)), np.asarray(conv(x)), rtol=1e-5, atol=1e-5)
    lstm = BiLSTM(37, 16)
    q = lstm.to_quantized(group_size=32, bits=8)
    weight_ih, weight_hh = dense_weights(q)
    lstm.update({"weight_ih": weight_ih, "weight_hh": weight_hh})
    np.testing.assert_allclose(np.asarray(q(x)), np.asarray(lstm(x)), rtol=1e-5, atol=1e-5)


def bits_by_layer(model) -> dict:
    return {path: getattr(m, "bits", None) for path, m in layers(model).items()}


def test_expand_once_dequantizes_a_shared_layer_once(monkeypatch):
    """Within `expand_once`, a quantized layer applied many times over many positions (ALBERT's shared layer)
    is dequantized once; outside it, once a call. The output is the same either way."""
    from mlx_tts import layers as quantize

    mx.random.seed(0)
    layer = nn.Linear(128, 64).to_quantized(group_size=64, bits=4)
    x = mx.random.normal((1, 20, 128))
    calls, dequantized = [], quantize.dequantized_weight
    monkeypatch.setattr(quantize, "dequantized_weight", lambda layer: calls.append(layer) or dequantized(layer))
    plain = [quantize.linear(layer, x) for _ in range(3)]
    assert len(calls) == (3 if mx.default_device() == mx.cpu else 0)
    calls.clear()
    with quantize.expand_once():
        shared = [quantize.linear(layer, x) for _ in range(3)]
    assert len(calls) == (1 if mx.default_device() == mx.cpu else 0)
    for a, b in zip(plain, shared):
        assert mx.array_equal(a, b)


def test_mixed_recipes_by_name(tiny_model):
    model = fresh_copy(tiny_model)
    _, config = quantize_model(model, model.config, group_size=64, bits=4, recipe="mixed")
    bits = bits_by_layer(model)
    assert bits["bert.encoder.layer.ffn"] == 8 and bits["bert.embeddings.word_embeddings"] == 8
    assert bits["decoder.generator.conv_post"] == 8 and bits["text_encoder.embedding"] == 8
    assert bits["decoder.generator.resblocks.0.convs1.0"] == 4 and bits["predictor.lstm"] == 4
    assert config["quantization"]["bert.encoder.layer.ffn"] == {"group_size": 64, "bits": 8}

    model = fresh_copy(tiny_model)
    _, config = quantize_model(model, model.config, group_size=64, bits=4, recipe="keep-embeddings")
    embeddings = [p for p in layers(model) if re.search(EMBEDDINGS, p)]
    assert "bert.embeddings.word_embeddings" in embeddings and "text_encoder.embedding" in embeddings
    assert all(isinstance(layers(model)[p], FLOAT) for p in embeddings)
    assert set(embeddings) <= set(full_precision_layers(config))
    assert bits_by_layer(model)["bert.encoder.layer.ffn"] == 4

    with pytest.raises(ValueError, match="unknown quantization recipe 'tiny'; available: uniform, mixed"):
        quantize_model(fresh_copy(tiny_model), tiny_model.config, recipe="tiny")


def test_mixed_recipe_by_rules_survives_saving(tiny_model, tmp_path):
    model = fresh_copy(tiny_model)
    rules = [(r"^decoder\.generator\.", None), (r"^bert\.", 6), (r"^predictor\.", 2)]
    weights, config = quantize_model(model, model.config, group_size=32, bits=5, recipe=rules)
    bits = bits_by_layer(model)
    assert all(b is None for p, b in bits.items() if p.startswith("decoder.generator."))
    assert {b for p, b in bits.items() if p.startswith("bert.")} == {6}
    assert {b for p, b in bits.items() if p.startswith("predictor.")} - {None} == {2}
    assert bits["decoder.decode.0.conv1"] == 5 and bits["text_encoder.lstm"] == 5
    assert "decoder.generator.conv_post" in full_precision_layers(config)
    loaded = load_model(save_model(tmp_path / "rules", weights, config, source=model))
    assert bits_by_layer(loaded) == bits


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 7}, "bits must be one of 2, 3, 4, 5, 6, 8; got 7"),
        ({"bits": 1}, "bits must be one of 2, 3, 4, 5, 6, 8; got 1"),
        ({"group_size": 48}, "group_size must be one of 32, 64, 128; got 48"),
        ({"group_size": 256}, "group_size must be one of 32, 64, 128; got 256"),
        ({"recipe": [(r"^bert\.", 7)]}, "bits must be one of 2, 3, 4, 5, 6, 8; got 7"),
        ({"recipe": [("(", 4)]}, r"quantization rule '\(': bad regular expression"),
        ({"recipe": [r"^bert\."]}, "is not a .regex, bits or None. pair"),
    ],
)
def test_bad_arguments_name_the_valid_values(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(fresh_copy(tiny_model), tiny_model.config, **kwargs)


def test_quantizing_a_quantized_model_is_refused(tiny_model, quantized_4bit):
    model, _, config, folder = quantized_4bit
    with pytest.raises(ValueError, match="already quantized; load its full-precision source"):
        quantize_model(model, tiny_model.config)  # quantized modules, plain config
    loaded = load_model(folder)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(loaded, loaded.config)


@pytest.mark.parametrize("layer", ["decoder.generator.conv_post", "predictor.lstm", "bert.encoder.layer.ffn"])
def test_missing_scales_name_the_layer(quantized_4bit, tmp_path, layer):
    _, _, _, folder = quantized_4bit
    broken = shutil.copytree(folder, tmp_path / "broken")
    weights = dict(mx.load(str(broken / "model.safetensors")))
    del weights[f"{layer}.scales"]
    mx.save_safetensors(str(broken / "model.safetensors"), weights, metadata={"format": "mlx"})
    (broken / MANIFEST).unlink()  # a deliberate edit (else the manifest refuses the changed file first)
    with pytest.raises(ModelLoadError, match=f"missing quantization scales/biases for layers: {re.escape(layer)}"):
        load_model(broken)


def test_convert_cli_quantizes_kokoro(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "kokoro-3bit"
    convert_main(["--model", str(tiny_checkpoint), "-q", "--q-bits", "3", "--q-group-size", "128",
                  "--q-recipe", "mixed", "-o", str(out)])
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed and "decoder.F0_conv" in printed  # names the layers kept in full precision
    model = load_model(out)
    assert model.config["quantization"]["bits"] == 3 and model.config["quantization"]["group_size"] == 128
    assert model.decoder.generator.ups[0].bits == 3 and model.bert.encoder.layer.ffn_output.bits == 8
    assert np.isfinite(speak(model)).all()


def test_convert_cli_casts_then_quantizes(tiny_checkpoint, tmp_path):
    out = tmp_path / "kokoro-bf16-8bit"
    result = subprocess.run(
        [sys.executable, "-m", "mlx_tts.convert", "--model", str(tiny_checkpoint), "-q", "--q-bits", "8",
         "--dtype", "bfloat16", "-o", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert model.decoder.F0_conv.weight.dtype == mx.bfloat16  # kept unquantized, cast
    assert model.decoder.generator.ups[0].scales.dtype == mx.bfloat16
    assert np.isfinite(speak(model)).all()


def test_convert_cli_refuses_bad_bits_and_group_sizes(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        convert_main(["--model", str(tiny_checkpoint), "-q", "--q-bits", "7", "-o", str(tmp_path / "x")])
    assert "invalid choice: 7 (choose from 2, 3, 4, 5, 6, 8)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_main(["--model", str(tiny_checkpoint), "-q", "--q-group-size", "16", "-o", str(tmp_path / "x")])
    assert "invalid choice: 16 (choose from 32, 64, 128)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_csm_folder(tmp_path_factory):
    return tiny_mlx_csm_folder(tmp_path_factory.mktemp("csm") / "tiny-csm")


@pytest.mark.parametrize("recipe", ["uniform", "mixed"])
def test_convert_cli_quantizes_csm(tiny_csm_folder, tmp_path, recipe):
    from mlx_tts.models.csm import CSMPipeline

    out = tmp_path / f"csm-4bit-{recipe}"
    convert_main(["--model", str(tiny_csm_folder), "-q", "--q-bits", "4", "--q-group-size", "32",
                  "--q-recipe", recipe, "-o", str(out)])
    assert (out / "tokenizer.json").is_file()
    model = load_model(out)
    assert isinstance(model.backbone.layers[0].mlp.down_proj, nn.QuantizedLinear)
    assert model.backbone.layers[0].mlp.down_proj.bits == 4
    codec = [m for _, m in model.codec.named_modules() if isinstance(m, QUANTIZED)]
    if recipe == "mixed":  # the codec stays in full precision, embeddings and heads at 8 bits
        assert not codec and model.codebook0_head.bits == 8 and model.text_embeddings.bits == 8
    else:
        assert codec
    audio = CSMPipeline(model).generate("hello world", max_audio_length_ms=160, seed=0)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()


@pytest.mark.reference
def test_real_kokoro_more_bits_come_closer_to_full_precision():
    from mlx_tts.quality import compare

    reference = load_model(EMBEDDED_MODEL)
    reports = {}
    for bits in (8, 4, 2):
        candidate = load_model(EMBEDDED_MODEL)
        quantize_model(candidate, candidate.config, group_size=64, bits=bits)
        reports[bits] = compare(reference, candidate, "The quick brown fox jumps over the lazy dog.", seed=0,
                                voice="jf_alpha", lang_code="a")
    measures = ("log_mel_distance_db", "aligned_log_mel_distance_db", "snr_db", "spectral_snr_db", "durations")
    summary = {b: {k: r[k] for k in measures}
               for b, r in reports.items()}
    print(summary)
    distance = {b: r["log_mel_distance_db"] for b, r in reports.items()}
    assert distance[8] < distance[4] < distance[2], summary
    aligned = {b: r["aligned_log_mel_distance_db"] for b, r in reports.items()}
    assert aligned[8] < aligned[4] < aligned[2], summary
    assert distance[8] < 1.5, summary  # measured 0.65 dB
    spectral_snr = {b: r["spectral_snr_db"] for b, r in reports.items()}
    assert spectral_snr[8] > spectral_snr[4] > spectral_snr[2], summary
    durations = reports[8]["durations"]
    assert abs(durations["frames_candidate"] - durations["frames_reference"]) <= 1, summary
    assert reports[8]["memory_mb_candidate"] < 0.3 * reports[8]["memory_mb_reference"]
