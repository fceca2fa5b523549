"""1-D convolutions for the engine, in MLX layout (x: [B, T, C_in], weight: [C_out, K, C_in / groups]).

Every model routes its convolutions through these two functions, so that the fastest implementation for the
device is chosen here, in one place:

- GPU (Metal, CUDA): MLX's own `mx.conv1d` / `mx.conv_transpose1d`.
- CPU, groups == 1: MLX's CPU convolutions are slow for dilated and strided kernels (figures in
  bench/README.md). In float32 they run in native MLX primitives (`mlx_tts.ext`) when those could be built:
  a direct AVX-512 kernel that sums every tap in registers for long inputs, else one strided BLAS GEMM per
  tap accumulating in place; both multithreaded. Otherwise each tap is one MLX matmul
  (`conv1d_matmul`, `conv_transpose1d_matmul`).
- CPU, groups > 1 (Kokoro's depthwise upsampler, small): MLX's own.
- CPU, half-precision weights or inputs (a bfloat16 model): the operands are widened to float32 and the result
  narrowed back to the input's dtype, so they take the float32 paths above: MLX's CPU convolutions in bfloat16
  ran ~5x slower than float32 (the widening costs one pass over the weights, like a dequantization).

`conv1d` can also add a residual to its output and apply Kokoro's AdaIN + Snake to its input (`residual`,
`input_adain`): in the native kernel both happen inside the convolution (no passes of their own, no
normalized copy of the input in memory, the output in the residual's buffer when it is free); elsewhere they
are the plain MLX ops.

`MLX_TTS_CONV` overrides the choice on the CPU: `auto` (default), `mlx-ops` (MLX-op rewrites only) or
`mlx` (MLX's own convolutions everywhere; formerly `native`, still read with a deprecation warning: "native"
names the C++ kernels everywhere else).
"""

import logging
import os

import mlx.core as mx

from . import ext
from .activations import adain_snake

logger = logging.getLogger("mlx_tts")
_CHOICES = ("auto", "mlx-ops", "mlx")
_warned_native = False


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, residual=None, input_adain=None):
    """`residual` (the output's shape) is added to the output: in the native kernel that costs no pass of its
    own (residual blocks' `x + conv(...)`), and the output reuses the residual's memory when it can.
    `input_adain` = (gamma, beta, alpha, eps): the convolution's input is `adain_snake(x, gamma, beta, alpha,
    eps)` (see mlx_tts.activations); the native kernel applies it as it reads x, so that normalized copy of x
    is never written to memory."""
    if _widens(x, weight, bias, residual, *(input_adain or ())[:3]):
        widened = None if input_adain is None else (*map(_float32, input_adain[:3]), input_adain[3])
        y = conv1d(_float32(x), _float32(weight), _float32(bias), stride, padding, dilation, groups,
                   _float32(residual), widened)
        return y.astype(x.dtype)
    adain_operands = () if input_adain is None else [a for a in input_adain[:3] if a is not None]
    path = _cpu_path(x, weight, bias, groups, residual, *adain_operands)
    if path == "kernel":
        gamma, beta, alpha, eps = input_adain if input_adain is not None else (None, None, None, 1e-5)
        return ext.cpu_kernels().conv1d(x, weight, bias, stride, padding, dilation, residual, gamma, beta, alpha, eps)
    if input_adain is not None:
        x = adain_snake(x, *input_adain)
    if path == "mlx-ops":
        y = conv1d_matmul(x, weight, stride, padding, dilation)
    else:
        y = mx.conv1d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if bias is not None:
        y = y + bias
    return y if residual is None else y + residual


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1):
    """weight: [C_out, K, C_in / groups] (MLX's layout for conv_transpose1d)."""
    if _widens(x, weight, bias):
        y = conv_transpose1d(_float32(x), _float32(weight), _float32(bias), stride, padding, output_padding, groups)
        return y.astype(x.dtype)
    path = _cpu_path(x, weight, bias, groups)
    if path == "kernel":
        return ext.cpu_kernels().conv_transpose1d(x, weight, bias, stride, padding, output_padding)
    if path == "mlx-ops":
        y = conv_transpose1d_matmul(x, weight, stride, padding, output_padding)
    else:
        y = mx.conv_transpose1d(
            x, weight, stride=stride, padding=padding, output_padding=output_padding, groups=groups
        )
    return y if bias is None else y + bias


HALF_TYPES = (mx.bfloat16, mx.float16)


def _widens(*arrays) -> bool:
    """Whether a convolution runs widened to float32: on the CPU, with any half-precision operand."""
    return mx.default_device() == mx.cpu and any(a is not None and a.dtype in HALF_TYPES for a in arrays)


def _float32(a):
    return None if a is None else a.astype(mx.float32)


def _cpu_path(x, weight, bias, groups, *operands) -> str:
    """"kernel" (native primitive), "mlx-ops" (tap GEMMs as MLX ops) or "mlx" (mx.conv*)."""
    global _warned_native
    choice = os.environ.get("MLX_TTS_CONV", "auto")
    if choice == "native":
        if not _warned_native:
            logger.warning("MLX_TTS_CONV=native is deprecated: it is now MLX_TTS_CONV=mlx (MLX's own convolutions)")
            _warned_native = True
        choice = "mlx"
    if choice not in _CHOICES:
        raise ValueError(f"MLX_TTS_CONV must be {', '.join(_CHOICES)}, not {choice!r}")
    if choice == "mlx" or groups != 1 or mx.default_device() != mx.cpu:
        return "mlx"
    arrays = [a for a in (x, weight, bias, *operands) if a is not None]
    if choice == "auto" and ext.kernels_for(*arrays) is not None:
        return "kernel"
    return "mlx-ops"


def conv1d_matmul(x, weight, stride=1, padding=0, dilation=1):
    """conv1d (groups=1) as a sum of one matmul per kernel tap over a shifted (strided) view of x."""
    _, length, _ = x.shape
    _, kernel, _ = weight.shape
    t_out = (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if t_out <= 0:
        raise ValueError(f"conv1d: input length {length} is too short for kernel {kernel}, dilation {dilation}")
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    taps = weight.swapaxes(1, 2)  # [C_out, C_in, K]: taps[..., k].T is tap k's [C_in, C_out] matrix
    y = None
    for k in range(kernel):
        start = k * dilation
        window = x[:, start : start + stride * (t_out - 1) + 1 : stride]
        w_k = taps[..., k].T
        y = window @ w_k if y is None else mx.addmm(y, window, w_k)
    return y


def conv_transpose1d_matmul(x, weight, stride=1, padding=0, output_padding=0):
    """conv_transpose1d (groups=1) as one matmul for all taps, then an overlap-add of stride-sized blocks.

    Input step t writes output rows t * stride - padding + k. With the kernel zero-padded to a multiple of
    the stride, tap k = j * stride + r lands in block t + j at offset r, so the overlap-add is a sum of
    ceil(K / stride) shifted copies of [T, stride * C_out] blocks.
    """
    batch, length, _ = x.shape
    c_out, kernel, c_in = weight.shape
    t_out = (length - 1) * stride - 2 * padding + kernel + output_padding
    blocks = -(-kernel // stride)
    weight = mx.pad(weight, [(0, 0), (0, blocks * stride - kernel), (0, 0)])
    # [K', C_out, C_in] flattened: output column (k, o) of the matmul below.
    w_all = weight.swapaxes(0, 1).reshape(blocks * stride * c_out, c_in)
    z = (x @ w_all.T).reshape(batch, length, blocks, stride * c_out)
    y = mx.pad(z[:, :, 0], [(0, 0), (0, blocks - 1), (0, 0)])
    for j in range(1, blocks):
        y = y + mx.pad(z[:, :, j], [(0, 0), (j, blocks - 1 - j), (0, 0)])
    y = y.reshape(batch, (length + blocks - 1) * stride, c_out)
    end = padding + t_out
    if end > y.shape[1]:
        y = mx.pad(y, [(0, 0), (0, end - y.shape[1]), (0, 0)])
    return y[:, padding:end]
