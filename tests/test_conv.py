"""The CPU kernels (convolutions on every path, Snake) against MLX's own ops and PyTorch, and the BLAS switch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_tts import activations, conv, cpu_blas, ext

ROOT = Path(__file__).resolve().parents[1]

# Kokoro's generator convolutions, with the real channel counts and kernels and shortened lengths:
# (name, transpose, T, C_in, C_out, K, stride, padding, dilation or output_padding)
KOKORO_SHAPES = [
    ("up1", True, 24, 512, 256, 20, 10, 5, 0),
    ("up2", True, 60, 256, 128, 12, 6, 3, 0),
    ("noise_conv1", False, 361, 22, 256, 12, 6, 3, 1),
    ("noise_conv2", False, 361, 22, 128, 1, 1, 0, 1),
    ("conv_post", False, 360, 128, 22, 7, 1, 3, 1),
    ("conv1x1", False, 50, 512, 64, 1, 1, 0, 1),
] + [
    (f"res C{c} k{k} d{d}", False, t, c, c, k, 1, d * (k - 1) // 2, d)
    for c, t in [(256, 120), (128, 360)]
    for k in (3, 7, 11)
    for d in (1, 3, 5)
]


def random_operands(t, c_in, c_out, k, batch=1, seed=0, dtype=mx.float32):
    mx.random.seed(seed)
    x = mx.random.normal((batch, t, c_in)).astype(dtype)
    w = (mx.random.normal((c_out, k, c_in)) * (c_in * k) ** -0.5).astype(dtype)
    b = mx.random.normal((c_out,)).astype(dtype)
    return x, w, b


def reference(transpose, x, w, b, stride, padding, extra, groups=1):
    if transpose:
        y = mx.conv_transpose1d(x, w, stride=stride, padding=padding, output_padding=extra, groups=groups)
    else:
        y = mx.conv1d(x, w, stride=stride, padding=padding, dilation=extra, groups=groups)
    return y + b


def assert_close(y, ref, tol=1e-4):
    assert y.shape == ref.shape
    scale = max(1.0, mx.abs(ref).max().item())
    err = mx.abs(y.astype(mx.float32) - ref.astype(mx.float32)).max().item()
    assert err <= tol * scale, f"max abs error {err} (scale {scale})"


@pytest.mark.parametrize("shape", KOKORO_SHAPES, ids=[s[0] for s in KOKORO_SHAPES])
def test_kokoro_shapes_every_path(kernel, shape):
    _, transpose, t, c_in, c_out, k, stride, padding, extra = shape
    x, w, b = random_operands(t, c_in, c_out, k)
    ref = reference(transpose, x, w, b, stride, padding, extra)
    if transpose:
        assert_close(kernel.conv_transpose1d(x, w, b, stride, padding, extra), ref)
        assert_close(conv.conv_transpose1d_matmul(x, w, stride, padding, extra) + b, ref)
        assert_close(conv.conv_transpose1d(x, w, b, stride, padding, extra), ref)
    else:
        assert_close(kernel.conv1d(x, w, b, stride, padding, extra), ref)
        assert_close(conv.conv1d_matmul(x, w, stride, padding, extra) + b, ref)
        assert_close(conv.conv1d(x, w, b, stride, padding, extra), ref)


def random_small_shapes(n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(1, 9))
        stride = int(rng.integers(1, 5))
        transpose = bool(rng.integers(0, 2))
        if transpose:
            padding = int(rng.integers(0, k))
            extra = int(rng.integers(0, stride))  # output_padding < stride
            t = int(rng.integers(1, 40))
        else:
            padding = int(rng.integers(0, 2 * k))
            extra = int(rng.integers(1, 4))  # dilation
            t = max(int(rng.integers(1, 60)), extra * (k - 1) + 1 - 2 * padding)
        batch = int(rng.integers(1, 3))  # drawn in this order: the cases are the same as ever
        c_in, c_out = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        yield transpose, batch, t, c_in, c_out, k, stride, padding, extra


@pytest.mark.parametrize("case", list(random_small_shapes(60, seed=1)))
def test_random_small_shapes(kernel, case):
    transpose, batch, t, c_in, c_out, k, stride, padding, extra = case
    x, w, b = random_operands(t, c_in, c_out, k, batch=batch, seed=len(str(case)))
    ref = reference(transpose, x, w, b, stride, padding, extra)
    if transpose:
        assert_close(kernel.conv_transpose1d(x, w, b, stride, padding, extra), ref)
        assert_close(kernel.conv_transpose1d(x, w, None, stride, padding, extra), ref - b)
        assert_close(conv.conv_transpose1d_matmul(x, w, stride, padding, extra) + b, ref)
    else:
        assert_close(kernel.conv1d(x, w, b, stride, padding, extra), ref)
        assert_close(kernel.conv1d(x, w, None, stride, padding, extra), ref - b)
        assert_close(conv.conv1d_matmul(x, w, stride, padding, extra) + b, ref)


# Long enough (>= 512 output rows) for the direct AVX-512 kernel: every resblock shape, a strided conv,
# a channel count that is not a multiple of 16, edge tiles into the padding. Reference: the MLX-op path,
# which the tests above hold to mx.conv1d (mx.conv1d itself takes seconds per dilated conv this long).
DIRECT_SHAPES = [
    (t, c, c, k, 1, d * (k - 1) // 2, d) for c, t in [(128, 700), (256, 530)] for k in (3, 7, 11) for d in (1, 3, 5)
] + [
    (3601, 22, 256, 12, 6, 3, 1),  # noise conv
    (600, 128, 22, 7, 1, 3, 1),  # conv_post
    (777, 37, 70, 4, 1, 9, 2),
    (1030, 5, 3, 3, 2, 0, 1),
]


# Transposed: (T, C_in, C_out, K, stride, padding, output_padding), >= 512 output rows.
DIRECT_TRANSPOSED_SHAPES = [
    (60, 512, 256, 20, 10, 5, 0),  # Kokoro's upsamplers
    (100, 256, 128, 12, 6, 3, 0),
    (300, 48, 48, 3, 2, 1, 1),
    (170, 20, 70, 5, 3, 0, 2),
    (130, 8, 5, 2, 4, 0, 3),  # kernel < stride: phases that no tap reaches
]


@pytest.mark.parametrize("shape", DIRECT_SHAPES)
def test_direct_kernel_long_inputs(kernel, shape):
    t, c_in, c_out, k, stride, padding, dilation = shape
    x, w, b = random_operands(t, c_in, c_out, k, batch=2 if t < 800 else 1)
    expected = conv.conv1d_matmul(x, w, stride, padding, dilation) + b
    assert_close(kernel.conv1d(x, w, b, stride, padding, dilation), expected)


@pytest.mark.parametrize("shape", DIRECT_TRANSPOSED_SHAPES)
def test_direct_kernel_long_transposed(kernel, shape):
    t, c_in, c_out, k, stride, padding, output_padding = shape
    x, w, b = random_operands(t, c_in, c_out, k, batch=2)
    expected = reference(True, x, w, b, stride, padding, output_padding)
    assert expected.shape[1] >= 512
    assert_close(kernel.conv_transpose1d(x, w, b, stride, padding, output_padding), expected)


# Long enough for the FFT convolution (stride 1, >= 7 taps, rows * taps >= 16000) where the CPU has no AVX-512:
# (T, C_in, C_out, K, padding, dilation, batch). Both block sizes (64 points, 32 for wide convolutions), a
# kernel that needs 128 points, channel counts that are not multiples of 8, no padding and more than "same".
FFT_SHAPES = [
    (2400, 128, 128, 7, 3, 1, 1),
    (1500, 256, 256, 11, 25, 5, 2),
    (2100, 24, 40, 9, 0, 2, 1),
    (1300, 13, 7, 40, 30, 1, 2),
    (2000, 128, 64, 11, 40, 3, 1),
]


@pytest.mark.parametrize("shape", FFT_SHAPES, ids=[f"T{s[0]} C{s[1]} k{s[3]} p{s[4]} d{s[5]}" for s in FFT_SHAPES])
def test_fft_convolution_shapes(kernel, shape):
    t, c_in, c_out, k, padding, dilation, batch = shape
    x, w, b = random_operands(t, c_in, c_out, k, batch=batch, seed=t)
    expected = conv.conv1d_matmul(x, w, 1, padding, dilation) + b
    assert_close(kernel.conv1d(x, w, b, 1, padding, dilation), expected)
    gamma, beta, alpha = adain_operands(batch, t, c_in)[1:]
    residual = mx.random.normal(expected.shape)
    normalized = activations._snake_mlx(activations._adain_mlx(x, gamma, beta, 1e-5), alpha)
    expected = conv.conv1d_matmul(normalized, w, 1, padding, dilation) + b + residual
    assert_close(kernel.conv1d(x, w, b, 1, padding, dilation, residual, gamma, beta, alpha, 1e-5), expected, tol=2e-5)


def test_kernel_splits_long_inputs_over_threads(kernel):
    # Long enough for several threads and several cache blocks per thread, with a batch of 2.
    x, w, b = random_operands(3001, 16, 24, 5, batch=2)
    assert_close(kernel.conv1d(x, w, b, 1, 4, 2), reference(False, x, w, b, 1, 4, 2))
    assert_close(kernel.conv_transpose1d(x, w, b, 3, 1, 1), reference(True, x, w, b, 3, 1, 1))


def test_depthwise_upsampler_keeps_mlx_path():
    # Kokoro's AdainResBlk1d pool: ConvTranspose1d(C, C, 3, stride 2, groups=C, padding 1, output_padding 1).
    c = 64
    mx.random.seed(3)
    x = mx.random.normal((1, 37, c))
    w = mx.random.normal((c, 3, 1))
    b = mx.random.normal((c,))
    y = conv.conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1, groups=c)
    assert y.shape == (1, 74, c)
    assert_close(y, reference(True, x, w, b, 2, 1, 1, groups=c))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("transpose", [False, True])
def test_half_precision_runs_widened_to_float32_in_the_kernel(monkeypatch, kernel, dtype, transpose):
    """A half-precision model's convolutions (weights, or inputs too) run on the float32 kernel and come back in
    the input's dtype."""
    monkeypatch.setenv("MLX_TTS_CONV", "auto")
    x, w, b = random_operands(200, 32, 16, 7, dtype=dtype)
    name, args = ("conv_transpose1d", (2, 3, 1)) if transpose else ("conv1d", (1, 6, 2))
    calls, kernel_fn = [], getattr(kernel, name)
    monkeypatch.setattr(kernel, name, lambda *a: calls.append(a) or kernel_fn(*a))
    for x_in in (x, x.astype(mx.float32)):  # half-precision activations, or float32 ones on half weights
        y = getattr(conv, name)(x_in, w, b, *args)
        assert y.dtype == x_in.dtype
        widened = reference(transpose, x.astype(mx.float32), w.astype(mx.float32), b.astype(mx.float32), *args)
        assert_close(y, widened, tol=1e-2 if x_in.dtype != mx.float32 else 1e-4)
    assert len(calls) == 2 and all(a.dtype == mx.float32 for a in calls[0][:3])


@pytest.mark.parametrize("choice", ["mlx", "mlx-ops", "auto"])
def test_switch_selects_each_path(monkeypatch, request, choice):
    if choice == "auto":
        request.getfixturevalue("kernel")  # auto picks the kernels, which need a compiler
    monkeypatch.setenv("MLX_TTS_CONV", choice)
    x, w, b = random_operands(100, 8, 8, 3)
    assert_close(conv.conv1d(x, w, b, padding=3, dilation=3), reference(False, x, w, b, 1, 3, 3))
    assert conv._cpu_path(x, w, None, groups=1) == {"auto": "kernel", "mlx-ops": "mlx-ops", "mlx": "mlx"}[choice]


def test_old_switch_value_native_still_selects_mlx_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("MLX_TTS_CONV", "native")
    monkeypatch.setattr(conv, "_warned_native", False)
    x, w, _ = random_operands(10, 4, 4, 3)
    with caplog.at_level("WARNING", logger="mlx_tts"):
        assert conv._cpu_path(x, w, None, groups=1) == "mlx"
        assert conv._cpu_path(x, w, None, groups=1) == "mlx"
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "MLX_TTS_CONV=native is deprecated: it is now MLX_TTS_CONV=mlx (MLX's own convolutions)"
    ]


def test_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv("MLX_TTS_CONV", "fast")
    x, w, _ = random_operands(10, 4, 4, 3)
    with pytest.raises(ValueError, match="MLX_TTS_CONV"):
        conv.conv1d(x, w)


def test_kernel_rejects_bad_operands(kernel):
    x, w, _ = random_operands(10, 4, 4, 3)
    with pytest.raises(ValueError, match="channels"):
        kernel.conv1d(x, w[:, :, :3], None, 1, 0, 1)
    with pytest.raises(ValueError, match="too short"):
        kernel.conv1d(x[:, :2], w, None, 1, 0, 1)
    with pytest.raises(ValueError, match="float32"):
        kernel.conv1d(x.astype(mx.float16), w, None, 1, 0, 1)
    with pytest.raises(ValueError, match="bias"):
        kernel.conv1d(x, w, mx.zeros((5,)), 1, 0, 1)
    with pytest.raises(ValueError, match="stride"):
        kernel.conv_transpose1d(x, w, None, 0, 0, 0)
    with pytest.raises(ValueError, match="dilation"):
        kernel.conv1d(x, w, None, 1, 0, 0)


def test_kernels_work_under_shapeless_compile(kernel):
    def block(x, w, alpha):
        return kernel.conv1d(kernel.snake(x, alpha), w, None, 1, 3, 3)

    compiled, shapeless = mx.compile(block), mx.compile(block, shapeless=True)
    for t in (40, 73):
        x, w, _ = random_operands(t, 8, 8, 3, seed=t)
        alpha = mx.full((8,), 1.5)
        expected = reference(False, activations._snake_mlx(x, alpha), w, mx.zeros((8,)), 1, 3, 3)
        assert_close(compiled(x, w, alpha), expected)
        assert_close(shapeless(x, w, alpha), expected)


def snake_reference(x, alpha):
    x64, a64 = np.array(x, dtype=np.float64), np.array(alpha, dtype=np.float64)
    return x64 + np.sin(a64 * x64) ** 2 / a64


@pytest.mark.parametrize(
    "shape, scale",
    [((1, 14400, 128), 1.0), ((1, 2400, 256), 5.0), ((2, 37, 7), 300.0), ((5, 3), 1e4)],
)
def test_snake_kernel_matches_float64(kernel, shape, scale):
    mx.random.seed(4)
    x = mx.random.normal(shape) * scale
    alpha = mx.random.uniform(0.05, 8.0, (shape[-1],))
    y = np.array(kernel.snake(x, alpha))
    expected = snake_reference(x, alpha)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-5 * max(1.0, 1 / 0.05))
    # The MLX fallback agrees too.
    np.testing.assert_allclose(np.array(activations._snake_mlx(x, alpha)), expected, rtol=1e-5, atol=2e-4)


def test_snake_dispatch(kernel):
    mx.random.seed(5)
    x = mx.random.normal((1, 64, 16)).swapaxes(1, 2)  # not contiguous: the kernel copies it first
    alpha = mx.random.uniform(0.5, 2.0, (64,))
    np.testing.assert_allclose(np.array(activations.snake(x, alpha)), snake_reference(x, alpha), rtol=1e-5, atol=1e-5)
    half = activations.snake(x.astype(mx.float16), alpha.astype(mx.float16))
    assert half.dtype == mx.float16
    np.testing.assert_allclose(np.array(half.astype(mx.float32)), snake_reference(x, alpha), rtol=1e-2, atol=2e-2)
    with pytest.raises(ValueError, match="alpha"):
        kernel.snake(x, alpha[:5])


@pytest.mark.parametrize("shape", [(1, 14401, 128), (2, 2400, 256), (1, 7, 3)])
def test_adain_snake_kernel_matches_mlx(kernel, shape):
    mx.random.seed(6)
    batch, _, c = shape
    x = mx.random.normal(shape) * 3 + 1
    gamma = mx.random.normal((batch, 1, c)) * 0.5
    beta = mx.random.normal((batch, 1, c))
    alpha = mx.random.uniform(0.1, 4.0, (c,))
    norm = activations._adain_mlx(x, gamma, beta, 1e-5)
    assert_close(kernel.adain_snake(x, gamma, beta, None, 1e-5), norm, tol=2e-5)
    fused = kernel.adain_snake(x, gamma[:, 0], beta[:, 0], alpha, 1e-5)
    assert_close(fused, activations._snake_mlx(norm, alpha), tol=2e-5)
    # Instance statistics: each channel of the normalized output has mean beta and std |1 + gamma|.
    np.testing.assert_allclose(np.array(norm.mean(axis=1)), np.array(beta[:, 0]), atol=1e-4)


def test_adain_snake_dispatch_and_errors(kernel):
    x, _, _ = random_operands(50, 8, 8, 1, batch=2)
    gamma, beta, alpha = mx.zeros((2, 8)), mx.ones((2, 8)), mx.full((8,), 2.0)
    expected = activations._snake_mlx(activations._adain_mlx(x, gamma, beta, 1e-5), alpha)
    assert_close(activations.adain_snake(x, gamma, beta, alpha), expected, tol=2e-5)
    half = activations.adain_snake(x.astype(mx.float16), gamma.astype(mx.float16), beta.astype(mx.float16))
    assert half.dtype == mx.float16
    with pytest.raises(ValueError, match="gamma and beta"):
        kernel.adain_snake(x, gamma[:1], beta, alpha, 1e-5)
    with pytest.raises(ValueError, match=r"\[B, T, C\]"):
        kernel.adain_snake(x[0], gamma, beta, alpha, 1e-5)


def test_mlx_ops_path_rejects_short_input():
    x, w, _ = random_operands(4, 4, 4, 3)
    with pytest.raises(ValueError, match="too short"):
        conv.conv1d_matmul(x, w, dilation=3)


def test_extension_switch_off_falls_back(monkeypatch):
    monkeypatch.setattr(ext, "_tried", False)
    monkeypatch.setattr(ext, "_cpu_kernels", None)
    monkeypatch.setenv("MLX_TTS_EXT", "off")
    monkeypatch.setenv("MLX_TTS_CONV", "auto")
    x, w, b = random_operands(50, 8, 8, 3)
    assert ext.cpu_kernels() is None
    assert conv._cpu_path(x, w, None, groups=1) == "mlx-ops"
    assert_close(conv.conv1d(x, w, b, padding=1), reference(False, x, w, b, 1, 1, 1))


@pytest.mark.reference
@pytest.mark.parametrize("shape", KOKORO_SHAPES[:5], ids=[s[0] for s in KOKORO_SHAPES[:5]])
def test_kokoro_shapes_match_torch(shape):
    import torch
    _, transpose, t, c_in, c_out, k, stride, padding, extra = shape
    x, w, b = random_operands(t, c_in, c_out, k)
    xt = torch.from_numpy(np.array(x)).transpose(1, 2)
    bt = torch.from_numpy(np.array(b))
    if transpose:
        wt = torch.from_numpy(np.array(w)).permute(2, 0, 1)  # torch: [C_in, C_out, K]
        expected = torch.nn.functional.conv_transpose1d(xt, wt, bt, stride, padding, extra)
        y = conv.conv_transpose1d(x, w, b, stride, padding, extra)
    else:
        wt = torch.from_numpy(np.array(w)).transpose(1, 2)  # torch: [C_out, C_in, K]
        expected = torch.nn.functional.conv1d(xt, wt, bt, stride, padding, extra)
        y = conv.conv1d(x, w, b, stride, padding, extra)
    np.testing.assert_allclose(np.array(y), expected.transpose(1, 2).numpy(), atol=1e-4, rtol=1e-4)


# The BLAS is chosen before mlx.core is imported, so each setting runs in a fresh interpreter.
BLAS_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from mlx_tts import cpu_blas
    active = cpu_blas.enable()
    import mlx.core as mx
    from mlx_tts import conv, ext
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 500), dtype=np.float32), rng.standard_normal((500, 200), dtype=np.float32)
    product = np.array(mx.array(a) @ mx.array(b))
    # Shapes the shim cuts into blocks of columns (wide, GEMV, transposed operands) or rows (tall).
    errors = []
    for m, k, n in [(1, 2048, 4096), (700, 129, 3000), (3000, 64, 100), (5, 1024, 1024)]:
        u, v = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
        want = u.astype(np.float64) @ v.astype(np.float64)
        u_t, v_t = mx.array(u.T.copy()).T, mx.array(v.T.copy()).T
        for got in (mx.array(u) @ mx.array(v), mx.array(u) @ v_t, u_t @ mx.array(v)):
            errors.append(float(np.abs(np.array(got) - want).max() / np.abs(want).max()))
    x = mx.array(rng.standard_normal((1, 400, 32), dtype=np.float32))
    w = mx.array(rng.standard_normal((24, 7, 32), dtype=np.float32))
    native = ext.cpu_kernels().conv1d(x, w, None, 1, 9, 3)
    conv_err = mx.abs(native - mx.conv1d(x, w, padding=9, dilation=3)).max().item()
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.save(sys.argv[1], product)
    print(json.dumps({"active": active, "matmul_err": float(np.abs(product - exact).max()), "conv_err": conv_err,
                      "shapes_err": max(errors)}))
    """
)


def run_blas_probe(tmp_path, setting, name):
    # Two threads even on a one-CPU machine, so that the shim's thread pool runs.
    env = {**os.environ, "MLX_TTS_BLAS": setting, "MLX_TTS_THREADS": "2", "PYTHONPATH": str(ROOT)}
    out = tmp_path / f"{name}.npy"
    result = subprocess.run(
        [sys.executable, "-c", BLAS_PROBE, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS swap is for Linux's mlx-cpu build only")
def test_blas_auto_and_off_agree(kernel, tmp_path):  # the probe runs a kernel too
    auto, auto_product = run_blas_probe(tmp_path, "auto", "auto")
    off, off_product = run_blas_probe(tmp_path, "off", "off")
    assert auto["active"] and ("blas_shim" in auto["active"] or "openblas" in auto["active"])
    assert off["active"] is None
    for result in (auto, off):
        assert result["matmul_err"] < 1e-3
        assert result["shapes_err"] < 1e-5
        assert result["conv_err"] < 1e-3
    # Same inputs, different summation order: proof that MLX's GEMM really ran on another library.
    assert not np.array_equal(auto_product, off_product)
    np.testing.assert_allclose(auto_product, off_product, atol=1e-3)


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS swap is for Linux's mlx-cpu build only")
def test_blas_bad_path_keeps_reference(kernel, tmp_path):
    result, _ = run_blas_probe(tmp_path, "/nonexistent/libblas.so", "bad")
    assert result["active"] is None
    assert result["matmul_err"] < 1e-3


def test_blas_only_acts_before_mlx_on_cpu_builds(monkeypatch):
    # In this process mlx.core is already loaded: too late to rebind its BLAS.
    assert "mlx.core" in sys.modules and not cpu_blas._applies()
    monkeypatch.delitem(sys.modules, "mlx.core")
    monkeypatch.setattr(sys, "platform", "linux")
    assert cpu_blas._applies()

    def cuda_installed(name):
        return "0.32.4"

    monkeypatch.setattr(cpu_blas.importlib.metadata, "version", cuda_installed)
    assert not cpu_blas._applies()
    monkeypatch.undo()
    monkeypatch.delitem(sys.modules, "mlx.core")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not cpu_blas._applies()


def adain_operands(batch, t, c_in, seed=1):
    mx.random.seed(seed)
    x = mx.random.normal((batch, t, c_in)) * 3 + 1
    gamma, beta = mx.random.normal((batch, c_in)), mx.random.normal((batch, c_in))
    alpha = mx.random.uniform(0.2, 2.0, (c_in,))
    return x, gamma, beta, alpha


# (T, C_in, C_out, K, dilation, batch): the direct kernel from 512 output rows, the BLAS path below.
FUSED_CASES = [(3001, 128, 128, 11, 5, 1), (1500, 256, 256, 7, 3, 2), (600, 64, 22, 7, 1, 1), (100, 128, 128, 3, 1, 2)]


@pytest.mark.parametrize("case", FUSED_CASES, ids=[f"T{c[0]} C{c[1]} k{c[3]} d{c[4]} B{c[5]}" for c in FUSED_CASES])
def test_conv_with_input_adain_and_residual(kernel, case):
    t, c_in, c_out, k, d, batch = case
    x, gamma, beta, alpha = adain_operands(batch, t, c_in)
    _, w, b = random_operands(t, c_in, c_out, k, seed=2)
    residual = mx.random.normal((batch, t, c_out))
    pad = d * (k - 1) // 2
    normalized = activations._snake_mlx(activations._adain_mlx(x, gamma, beta, 1e-5), alpha)
    expected = reference(False, normalized, w, b, 1, pad, d) + residual
    assert_close(kernel.conv1d(x, w, b, 1, pad, d, residual, gamma, beta, alpha, 1e-5), expected, tol=2e-5)
    # The residual as an intermediate that nothing else holds: the output takes over its buffer.
    fused = kernel.conv1d(x, w, b, 1, pad, d, residual * 2, gamma, beta, alpha, 1e-5)
    assert_close(fused, expected + residual, tol=2e-5)
    # Snake alone, the norm alone, and the residual alone.
    snake_only = kernel.conv1d(x, w, None, 1, pad, d, None, None, None, alpha)
    assert_close(snake_only, reference(False, activations._snake_mlx(x, alpha), w, 0, 1, pad, d), tol=2e-5)
    plain_norm = activations._adain_mlx(x, gamma, beta, 1e-5)
    norm_only = kernel.conv1d(x, w, b, 1, pad, d, None, gamma, beta, None)
    assert_close(norm_only, reference(False, plain_norm, w, b, 1, pad, d), tol=2e-5)
    assert_close(kernel.conv1d(x, w, b, 1, pad, d, residual), reference(False, x, w, b, 1, pad, d) + residual, tol=2e-5)


def test_conv_dispatch_with_input_adain(kernel, monkeypatch):
    x, gamma, beta, alpha = adain_operands(1, 700, 32)
    _, w, b = random_operands(700, 32, 16, 3, seed=3)
    residual = mx.random.normal((1, 700, 16))
    args = dict(residual=residual, input_adain=(gamma, beta, alpha, 1e-5))
    fused = conv.conv1d(x, w, b, 1, 3, 3, **args)
    monkeypatch.setenv("MLX_TTS_CONV", "mlx-ops")
    assert_close(conv.conv1d(x, w, b, 1, 3, 3, **args), fused, tol=2e-5)
    monkeypatch.setenv("MLX_TTS_CONV", "mlx")
    assert_close(conv.conv1d(x, w, b, 1, 3, 3, **args), fused, tol=2e-5)


def test_conv_rejects_bad_fused_operands(kernel):
    x, gamma, beta, alpha = adain_operands(1, 50, 8)
    _, w, b = random_operands(50, 8, 4, 3)
    with pytest.raises(ValueError, match="residual must be float32 with the output's shape"):
        kernel.conv1d(x, w, b, 1, 1, 1, mx.zeros((1, 49, 4)))
    with pytest.raises(ValueError, match="needs both gamma and beta"):
        kernel.conv1d(x, w, b, 1, 1, 1, None, gamma, None)
    with pytest.raises(ValueError, match=r"gamma and beta must be float32 \[B, C_in\]"):
        kernel.conv1d(x, w, b, 1, 1, 1, None, gamma[:, :4], beta[:, :4])
    with pytest.raises(ValueError, match=r"alpha must be float32 \[C_in\]"):
        kernel.conv1d(x, w, b, 1, 1, 1, None, None, None, alpha[:3])


def test_conv_takes_strided_and_broadcast_inputs(kernel):
    _, w, b = random_operands(600, 16, 16, 3)
    for x, residual in [
        (mx.random.normal((1, 16, 600)).transpose(0, 2, 1), mx.random.normal((1, 1200, 16))[:, ::2]),
        (mx.broadcast_to(mx.random.normal((1, 1, 16)), (1, 600, 16)), mx.broadcast_to(mx.ones((16,)), (1, 600, 16))),
    ]:
        expected = reference(False, mx.array(x), w, b, 1, 1, 1) + residual
        assert_close(kernel.conv1d(x, w, b, 1, 1, 1, residual), expected, tol=2e-5)


def test_residual_output_reuses_the_residual_buffer(kernel):
    """x + conv(h) with x held by nothing else: the output takes x's memory (one tensor, not two)."""
    _, w, b = random_operands(50_000, 64, 64, 3)
    x = mx.random.normal((1, 50_000, 64))
    h = kernel.conv1d(x, w, b, 1, 1, 1)
    mx.eval(x, h)
    size = x.nbytes
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    y = kernel.conv1d(h, w, b, 1, 1, 1, x)
    del x
    mx.eval(y)
    assert mx.get_peak_memory() - base < 0.5 * size
