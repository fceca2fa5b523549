"""The native softmax, GELU and LSTM recurrence (mlx_tts/ext) against float64 formulas, MLX's own ops and
PyTorch's LSTM, and the dispatch that picks them."""

import math
import os
from pathlib import Path
from unittest import mock

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_tts import activations, ext
from mlx_tts.models.kokoro.modules import BiLSTM


def cpu_flags() -> set:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return set(next((line for line in lines if line.startswith("flags")), "").split())


def test_build_runs_the_avx512_kernels_where_it_should(kernel):
    """The default build on an AVX-512 CPU runs the AVX-512 kernels, on an AVX2 CPU the AVX2 ones; the
    portable one (MLX_TTS_EXT=portable, tests/test_portable_kernels.py) neither, and MLX_TTS_EXT=avx2 keeps an
    AVX-512 CPU on the AVX2 ones."""
    setting = os.environ.get("MLX_TTS_EXT", "").strip().lower()
    if setting == "portable":
        assert not kernel.uses_avx512 and not kernel.uses_avx2
    elif Path("/proc/cpuinfo").exists():
        flags = cpu_flags()
        avx512 = "avx512f" in flags and setting != "avx2"
        assert kernel.uses_avx512 == avx512
        assert kernel.uses_avx2 == (not avx512 and {"avx2", "fma"} <= flags)


def softmax64(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1,), (3, 5), (2, 17), (4, 16), (12, 50, 498), (1, 1, 2049)])
def test_softmax_matches_float64(kernel, shape):
    mx.random.seed(sum(shape))
    x = mx.random.normal(shape) * 8
    y = np.array(kernel.softmax(x))
    expected = softmax64(x)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=2e-6)


def test_softmax_extremes(kernel):
    x = mx.array([[0.0, -1e30, -200.0, 90.0], [1e4, 1e4, -1e4, 0.0]])
    np.testing.assert_allclose(np.array(kernel.softmax(x)), softmax64(x), atol=1e-7)
    empty = kernel.softmax(mx.zeros((0, 4)))
    mx.eval(empty)
    assert empty.shape == (0, 4)


def test_gelu_tanh_matches_float64(kernel):
    x = mx.concatenate([mx.linspace(-30, 30, 6001), mx.random.normal((10000,)) * 3])
    x64 = np.array(x, np.float64)
    expected = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    np.testing.assert_allclose(np.array(kernel.gelu_tanh(x)), expected, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.array(nn.gelu_approx(x)), expected, rtol=1e-5, atol=1e-6)


def test_kernels_reject_bad_operands(kernel):
    with pytest.raises(ValueError, match="float32"):
        kernel.softmax(mx.zeros((2, 3), mx.float16))
    with pytest.raises(ValueError, match="float32"):
        kernel.gelu_tanh(mx.zeros((2,), mx.bfloat16))
    with pytest.raises(ValueError, match="at least one axis"):
        kernel.softmax(mx.array(1.0))
    with pytest.raises(ValueError, match=r"gates_x \[D, T, B, 4H\]"):
        kernel.lstm_recurrence(mx.zeros((2, 5, 1, 12)), mx.zeros((2, 4, 16)))


def test_dispatch_uses_kernels_for_float32_only(kernel):
    x = mx.random.normal((3, 64))
    q, k, v = (mx.random.normal((1, 4, 33, 16)) for _ in range(3))
    fused = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25)
    np.testing.assert_allclose(np.array(activations.attention(q, k, v, 0.25)), np.array(fused), atol=2e-6)
    np.testing.assert_allclose(np.array(activations.gelu_tanh(x)), np.array(nn.gelu_approx(x)), atol=2e-6)
    with mock.patch.object(ext, "cpu_kernels", side_effect=AssertionError("native kernel used for float16")):
        half = activations.gelu_tanh(x.astype(mx.float16))
        attn = activations.attention(*(a.astype(mx.float16) for a in (q, k, v)), 0.25)
    assert half.dtype == mx.float16 and attn.dtype == mx.float16
    np.testing.assert_allclose(np.array(attn.astype(mx.float32)), np.array(fused), atol=5e-3)


def lstm_without_kernels(lstm, x):
    with mock.patch.object(ext, "kernels_for", return_value=None):
        return lstm(x)


@pytest.mark.parametrize("batch, steps", [(1, 1), (1, 37), (2, 300)])
def test_lstm_recurrence_matches_mlx_steps(kernel, batch, steps):
    mx.random.seed(steps)
    lstm = BiLSTM(40, 24)
    lstm.bias = mx.random.normal(lstm.bias.shape)
    x = mx.random.normal((batch, steps, 40)) * 2
    native = lstm(x)
    assert native.shape == (batch, steps, 48)
    np.testing.assert_allclose(np.array(native), np.array(lstm_without_kernels(lstm, x)), atol=2e-6)


@pytest.mark.parametrize("input_dtype", [mx.float32, mx.bfloat16])
def test_bfloat16_lstm_runs_widened_in_the_native_recurrence(kernel, input_dtype):
    """A bfloat16 model's LSTM on the CPU: its weights widened to float32, the recurrence native, the output in
    the input's dtype, equal to the float32 LSTM on the same (rounded) weights."""
    mx.random.seed(5)
    lstm = BiLSTM(40, 24)
    lstm.bias = mx.random.normal(lstm.bias.shape)
    lstm.set_dtype(mx.bfloat16)
    x = (mx.random.normal((1, 30, 40)) * 2).astype(input_dtype)
    calls, kernel_fn = [], kernel.lstm_recurrence
    with mock.patch.object(kernel, "lstm_recurrence", side_effect=lambda *a: calls.append(a) or kernel_fn(*a)):
        y = lstm(x)
    assert len(calls) == 1 and y.dtype == input_dtype
    widened = BiLSTM(40, 24)
    widened.update({k: v.astype(mx.float32) for k, v in lstm.parameters().items()})
    expected = np.array(widened(x.astype(mx.float32)).astype(input_dtype).astype(mx.float32))
    np.testing.assert_allclose(np.array(y.astype(mx.float32)), expected, atol=1e-6)


@pytest.mark.reference
def test_lstm_recurrence_matches_torch(kernel):
    torch = pytest.importorskip("torch")
    mx.random.seed(3)
    lstm = BiLSTM(640, 256)
    lstm.bias = mx.random.normal(lstm.bias.shape) * 0.1
    x = mx.random.normal((1, 120, 640))
    reference = torch.nn.LSTM(640, 256, batch_first=True, bidirectional=True)
    H4 = 4 * 256
    state = {
        "weight_ih_l0": lstm.weight_ih[:H4],
        "weight_ih_l0_reverse": lstm.weight_ih[H4:],
        "weight_hh_l0": lstm.weight_hh[0],
        "weight_hh_l0_reverse": lstm.weight_hh[1],
        "bias_ih_l0": lstm.bias[:H4],
        "bias_ih_l0_reverse": lstm.bias[H4:],
        "bias_hh_l0": mx.zeros((H4,)),
        "bias_hh_l0_reverse": mx.zeros((H4,)),
    }
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in state.items()})
    with torch.no_grad():
        expected = reference(torch.tensor(np.array(x)))[0].numpy()
    np.testing.assert_allclose(np.array(lstm(x)), expected, atol=2e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("rows", [1, 2, 8])
def test_quantized_matvec_matches_mlx(kernel, bits, group_size, rows):
    mx.random.seed(bits * group_size + rows)
    weight = mx.random.normal((70, 384))
    x = mx.random.normal((rows, 384))
    packed, scales, biases = mx.quantize(weight, group_size, bits)
    expected = mx.quantized_matmul(x, packed, scales, biases, transpose=True, group_size=group_size, bits=bits)
    y = kernel.quantized_matvec(x, packed, scales, biases, group_size, bits)
    np.testing.assert_allclose(np.array(y), np.array(expected), atol=2e-5 * mx.abs(expected).max().item())


def test_quantized_matvec_rejects_bad_operands(kernel):
    packed, scales, biases = mx.quantize(mx.random.normal((8, 128)), 64, 4)
    x = mx.zeros((1, 128))
    with pytest.raises(ValueError, match="only 2, 3, 4, 5, 6 and 8 bits"):
        kernel.quantized_matvec(x, packed, scales, biases, 64, 7)
    with pytest.raises(ValueError, match="1 to 8 rows"):
        kernel.quantized_matvec(mx.zeros((9, 128)), packed, scales, biases, 64, 4)
    with pytest.raises(ValueError, match=r"weight must be \[N, K \* bits / 32\]"):
        kernel.quantized_matvec(mx.zeros((1, 64)), packed, scales, biases, 64, 4)
    with pytest.raises(ValueError, match="float32 scales and biases"):
        kernel.quantized_matvec(x, packed, scales.astype(mx.bfloat16), biases, 64, 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_linear_uses_native_matvec_for_few_positions(kernel, bits):
    from mlx_tts import layers

    mx.random.seed(bits)
    layer = nn.Linear(256, 96)
    layer.bias = mx.random.normal((96,))
    layer = layer.to_quantized(group_size=64, bits=bits)
    x = mx.random.normal((1, 3, 256))
    expected = layer(x)
    calls, kernel_fn = [], kernel.quantized_matvec
    with mock.patch.object(kernel, "quantized_matvec", side_effect=lambda *a: calls.append(a) or kernel_fn(*a)):
        y = layers.linear(layer, x)
    assert calls
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.array(y), np.array(expected), atol=1e-4)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_dequantize_is_bit_identical_to_mlx(kernel, bits, group_size):
    mx.random.seed(bits + group_size)
    packed, scales, biases = mx.quantize(mx.random.normal((37, 256)) * 5, group_size, bits)
    expected = mx.dequantize(packed, scales, biases, group_size, bits)
    assert mx.array_equal(kernel.dequantize(packed, scales, biases, group_size, bits), expected).item()


def test_dequantized_weight_dispatch(kernel):
    from mlx_tts import layers

    for bits in (4, 3):
        layer = nn.Linear(128, 16).to_quantized(group_size=32, bits=bits)
        calls = []

        def counted(*a, calls=calls, kernel_fn=kernel.dequantize):
            return calls.append(a) or kernel_fn(*a)

        with mock.patch.object(kernel, "dequantize", side_effect=counted):
            weight = layers.dequantized_weight(layer)
        assert calls
        expected = mx.dequantize(layer.weight, layer.scales, layer.biases, 32, bits)
        assert mx.array_equal(weight, expected).item()


def test_sin_cos_exp_match_float64(kernel):
    mx.random.seed(7)
    # Kokoro's harmonic phases reach ~1e6 radians over a long utterance.
    x = mx.concatenate([mx.linspace(-10, 10, 2001), mx.random.uniform(-1e6, 1e6, (20000,))])
    x64 = np.array(x, np.float64)
    np.testing.assert_allclose(np.array(kernel.sin(x)), np.sin(x64), rtol=0, atol=3e-7)
    np.testing.assert_allclose(np.array(kernel.cos(x)), np.cos(x64), rtol=0, atol=3e-7)
    e = mx.random.uniform(-87, 88, (20000,))
    np.testing.assert_allclose(np.array(kernel.exp(e)), np.exp(np.array(e, np.float64)), rtol=3e-7)
    np.testing.assert_allclose(np.array(activations.exp(e)), np.array(kernel.exp(e)))
    assert activations.sin(x.astype(mx.float16)).dtype == mx.float16  # MLX's own below float32


def test_source_noise_merged_form_has_the_reference_distribution():
    """Drawn internally, the source's nine noises are one Gaussian per sample scaled by the mixing weights'
    norm: with the sines silenced (F0 unvoiced), tanh^-1 of the output has that standard deviation."""
    from mlx_tts.models.kokoro.istftnet import SINE_AMP, SourceModule

    source = SourceModule(300)
    source.l_linear.bias = mx.zeros((1,))
    f0 = mx.zeros((1, 400))  # unvoiced: noise only, SINE_AMP / 3 per harmonic
    mx.random.seed(0)
    merged = np.arctanh(np.array(source(f0)))
    per_harmonic = np.arctanh(np.array(source(f0, mx.random.normal((1, 400 * 300, 9)))))
    expected = SINE_AMP / 3 * np.linalg.norm(np.array(source.l_linear.weight))
    assert abs(merged.std() / expected - 1) < 0.02
    assert abs(per_harmonic.std() / expected - 1) < 0.02


@pytest.mark.parametrize("k", [16, 100, 2048])
def test_bfloat16_matvec_matches_float32_product(kernel, k):
    mx.random.seed(k)
    weight = mx.random.normal((50, k)).astype(mx.bfloat16)
    x = mx.random.normal((3, k))
    expected = x @ weight.astype(mx.float32).T
    y = kernel.bfloat16_matvec(x, weight)
    np.testing.assert_allclose(np.array(y), np.array(expected), atol=1e-5 * np.sqrt(k) * mx.abs(expected).max().item())
    with pytest.raises(ValueError, match="bfloat16 \\[N, K\\]"):
        kernel.bfloat16_matvec(x, weight.astype(mx.float16))


def test_linear_runs_bfloat16_layers_natively(kernel):
    from mlx_tts import layers

    layer = nn.Linear(64, 32)
    layer.set_dtype(mx.bfloat16)
    x = mx.random.normal((1, 2, 64)).astype(mx.bfloat16)
    calls, kernel_fn = [], kernel.bfloat16_matvec
    with mock.patch.object(kernel, "bfloat16_matvec", side_effect=lambda *a: calls.append(a) or kernel_fn(*a)):
        y = layers.linear(layer, x)
    assert calls and y.dtype == mx.bfloat16
    np.testing.assert_allclose(np.array(y.astype(mx.float32)), np.array(layer(x).astype(mx.float32)), atol=0.05)


def test_concurrent_first_calls_build_once(monkeypatch, tmp_path):
    """The studio's background build and a first request may call `cpu_kernels()` together: one compiles,
    the other waits for that build and gets its module. The compiler is a slow script that counts its runs
    and writes an empty library (its output path is the last argument); loading it is faked."""
    import threading

    calls = tmp_path / "compiler_calls"
    compiler = tmp_path / "fake-c++"
    compiler.write_text(f'#!/bin/sh\necho run >> {calls}\nsleep 1\nfor last; do :; done\n: > "$last"\n')
    compiler.chmod(0o755)
    module = object()
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("MLX_TTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLX_TTS_EXT", raising=False)
    monkeypatch.setattr(ext, "_tried", False)
    monkeypatch.setattr(ext, "_cpu_kernels", None)
    monkeypatch.setattr(ext, "_load", lambda name, path: module)
    monkeypatch.setattr(ext, "_checked", lambda loaded: loaded)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ext.cpu_kernels())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls.read_text().splitlines() == ["run"]
    assert results == [module, module] and ext.ready()
