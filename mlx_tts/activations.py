"""Activations with a faster CPU implementation.

`snake(x, alpha)` = x + sin(alpha * x)^2 / alpha (alpha per channel, over the last axis), the activation of
Kokoro's iSTFTNet generator. MLX's CPU `sin` is scalar: one Snake over [14400, 128] (3 s of audio) takes
~80 ms, and the generator runs 48 of them, more time than all its convolutions. On the CPU in float32 the
native kernel (`mlx_tts.ext`, SIMD and multithreaded) computes it in under 1 ms; elsewhere (GPU, other
dtypes, no compiler, `MLX_TTS_EXT=off`) it is a compiled MLX expression.
"""

import mlx.core as mx

from . import ext


@mx.compile
def _snake_mlx(x, alpha):
    return x + (1 / alpha) * mx.sin(alpha * x) ** 2


def snake(x, alpha):
    kernels = ext.kernels_for(x, alpha)
    if kernels is not None:
        return kernels.snake(x, alpha)
    return _snake_mlx(x, alpha)
