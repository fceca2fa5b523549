"""Activations and normalizations with a faster CPU implementation.

- `snake(x, alpha)` = x + sin(alpha * x)^2 / alpha (alpha per channel, over the last axis), the activation of
  Kokoro's iSTFTNet generator.
- `adain_snake(x, gamma, beta, alpha=None, eps=1e-5)`: Kokoro's AdaIN, an instance norm over time of
  x [B, T, C] scaled by (1 + gamma) and shifted by beta ([B, C] or [B, 1, C]), followed by Snake when
  `alpha` is given: the pair in front of every convolution of the generator's resblocks.
- `gelu_tanh(x)`: GELU with the tanh approximation (ALBERT's "gelu_new").
- `sin(x)`, `cos(x)`, `exp(x)`: the elementwise functions (Kokoro's harmonic source and inverse STFT).
- `attention(q, k, v, scale)`: unmasked scaled dot-product attention over [B, heads, L, head_dim].

MLX's CPU `sin` is scalar, and the generator runs 48 Snakes: they took more time than all its convolutions;
its instance norm is four single-threaded passes. On the CPU in float32 the native kernels (`mlx_tts.ext`,
SIMD and multithreaded) do Snake in one pass and the fused AdaIN + Snake in two; elsewhere (GPU, other dtypes, no
compiler, `MLX_TTS_EXT=off`) these are compiled MLX expressions. Likewise MLX's CPU exp and tanh are scalar:
in ALBERT the softmax of the attention scores and the GELU took longer than all the matmuls; on the CPU in
float32 the native softmax and GELU are vectorized, and attention runs as two matmuls around that softmax
(MLX's fused attention is a Metal/CUDA kernel; on the CPU it falls back to the same three steps with MLX's
softmax).
Figures: bench/README.md.
"""

import mlx.core as mx
import mlx.nn as nn

from . import ext


@mx.compile
def _snake_mlx(x, alpha):
    return x + (1 / alpha) * mx.sin(alpha * x) ** 2


def _adain_mlx(x, gamma, beta, eps):
    mean = x.mean(axis=1, keepdims=True)
    inv_std = mx.rsqrt(x.var(axis=1, keepdims=True) + eps)
    return (x - mean) * (inv_std * (1 + gamma.reshape(x.shape[0], 1, -1))) + beta.reshape(x.shape[0], 1, -1)


def snake(x, alpha):
    kernels = ext.kernels_for(x, alpha)
    if kernels is not None:
        return kernels.snake(x, alpha)
    return _snake_mlx(x, alpha)


def adain_snake(x, gamma, beta, alpha=None, eps=1e-5):
    kernels = ext.kernels_for(x, gamma, beta, *([] if alpha is None else [alpha]))
    if kernels is not None:
        return kernels.adain_snake(x, gamma, beta, alpha, eps)
    y = _adain_mlx(x, gamma, beta, eps)
    return y if alpha is None else _snake_mlx(y, alpha)


def gelu_tanh(x):
    kernels = ext.kernels_for(x)
    if kernels is not None:
        return kernels.gelu_tanh(x)
    return nn.gelu_approx(x)


def attention(q, k, v, scale):
    kernels = ext.kernels_for(q, k, v)
    if kernels is not None:
        return kernels.softmax((q * scale) @ k.swapaxes(-1, -2)) @ v
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)


def _elementwise(name: str, mlx_function):
    def function(x):
        kernels = ext.kernels_for(x)
        return getattr(kernels, name)(x) if kernels is not None else mlx_function(x)

    function.__name__ = name
    return function


sin = _elementwise("sin", mx.sin)
cos = _elementwise("cos", mx.cos)
exp = _elementwise("exp", mx.exp)
