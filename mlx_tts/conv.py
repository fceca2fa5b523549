"""1-D convolutions for the engine, in MLX layout (x: [B, T, C_in], weight: [C_out, K, C_in / groups]).

Every model routes its convolutions through these two functions, so that a faster implementation for a
device can be chosen here, in one place.
"""

import mlx.core as mx


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    y = mx.conv1d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y if bias is None else y + bias


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1):
    """weight: [C_out, K, C_in / groups] (MLX's layout for conv_transpose1d)."""
    y = mx.conv_transpose1d(
        x, weight, stride=stride, padding=padding, output_padding=output_padding, groups=groups
    )
    return y if bias is None else y + bias
