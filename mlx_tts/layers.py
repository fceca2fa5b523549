"""The engine's layer building blocks, and how they run on each device.

- `linear(layer, x)`: applying an `nn.Linear` (float, half or quantized), with the CPU dispatch that makes
  quantized and half-precision layers fast there (expanded GEMMs, native matrix-vector kernels);
- `PackedWeights`, `QuantizableConv`, `QuantizedConv`: the bases of Kokoro's quantizable convolutions (and
  `PackedWeights` of its LSTMs), which `mlx_tts.quantize` quantizes like MLX's own layers;
- `dequantize`, `dequantized_weight`: the float matrix of a quantized layer.
"""

import contextlib
import contextvars
import math

import mlx.core as mx
import mlx.nn as nn

from . import ext
from .conv import conv1d, conv_transpose1d

# From this many positions on, `linear` expands low-precision weights to float32 on the CPU: MLX's 4-bit and
# bfloat16 kernels win for one position and lose for many (the crossover: bench/README.md).
EXPAND_MIN_POSITIONS = 8
# What the native quantized matrix-vector and dequantization kernels take (mlx_tts/ext/quantized.cpp).
NATIVE_MATVEC_BITS = (2, 3, 4, 5, 6, 8)
NATIVE_MATVEC_ROWS = 8




def dequantize(weight, scales, biases, group_size: int, bits: int) -> mx.array:
    """`mx.dequantize` for the affine mode, as MLX ops that unpack whole bytes at once. On the CPU this is
    faster than MLX's own for 3, 5 and 6 bits (values that straddle bytes) and bit-identical.

    MLX packs values little-endian, `per_pack` values in `pack_bytes` bytes (3 bits: 8 values in 3 bytes)."""
    per_pack = 8 // math.gcd(bits, 8)
    pack_bytes = bits * per_pack // 8
    packed = weight.view(mx.uint8).reshape(*weight.shape[:-1], -1, pack_bytes)
    if pack_bytes > 1:
        dtype = mx.uint64 if pack_bytes > 4 else mx.uint32
        # the bytes' fields are disjoint, so their sum is the packed word
        packed = (packed.astype(dtype) << (mx.arange(pack_bytes, dtype=dtype) * 8)).sum(axis=-1, keepdims=True)
    values = (packed >> (mx.arange(per_pack) * bits).astype(packed.dtype)) & ((1 << bits) - 1)
    values = values.reshape(*scales.shape, group_size).astype(scales.dtype)
    return (values * scales[..., None] + biases[..., None]).reshape(*scales.shape[:-1], -1)


def dequantized_weight(layer: nn.Module) -> mx.array:
    """The float matrix a quantized layer stores as `weight`, `scales` (and `biases`)."""
    if layer.mode == "affine" and mx.default_device() == mx.cpu:
        kernels = ext.kernels_for(layer.scales, layer.biases) if layer.bits in NATIVE_MATVEC_BITS else None
        if kernels is not None and layer.weight.ndim == 2:  # the native kernel: multithreaded, SIMD
            return kernels.dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
        return dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
    return mx.dequantize(layer.weight, layer.scales, layer.get("biases"), layer.group_size, layer.bits, layer.mode)


def linear(layer: nn.Module, x: mx.array) -> mx.array:
    """`layer(x)` for x [..., positions, in]: how every model applies its Linear layers. On the CPU, a
    quantized or half-precision layer applied to many positions at once is run as a float32 GEMM on its
    expanded weights: MLX's CPU kernels for those types are not BLAS-backed. A 4-bit, 8-bit or bfloat16 layer
    applied to a few positions (token-by-token generation) runs in the native kernels (`mlx_tts.ext`): one pass
    over the stored weights. Elsewhere (GPU, float32 layers) it is `layer(x)`. Figures: bench/README.md."""
    if mx.default_device() != mx.cpu:
        return layer(x)
    if x.shape[-2] < EXPAND_MIN_POSITIONS:
        y = _native_matvec(layer, x)
        return layer(x) if y is None else y
    if not isinstance(layer, nn.QuantizedLinear) and layer.weight.dtype == mx.float32:
        return layer(x)
    expanded = _expanded_weights.get()
    weight = expanded.get(id(layer)) if expanded is not None else None
    if weight is None:
        weight = dequantized_weight(layer) if isinstance(layer, nn.QuantizedLinear) else layer.weight
        weight = weight.astype(mx.float32)
        if expanded is not None:
            expanded[id(layer)] = weight
    y = x.astype(mx.float32) @ weight.T
    return (y + layer.bias if "bias" in layer else y).astype(x.dtype)


_expanded_weights = contextvars.ContextVar("expanded_weights", default=None)


@contextlib.contextmanager
def expand_once():
    """Within it, `linear` expands each layer's weights at most once: a shared layer applied many times (Kokoro's
    ALBERT: one layer, 12 times) pays one dequantization, not one a call. Released at exit."""
    token = _expanded_weights.set({})
    try:
        yield
    finally:
        _expanded_weights.reset(token)


def _native_matvec(layer: nn.Module, x: mx.array):
    """A 4/8-bit or bfloat16 layer's output for a few rows of x from the native kernels (float32 inside, x's
    dtype out); None where they don't apply."""
    rows = math.prod(x.shape[:-1])
    kernels = ext.kernels_for()  # the kernels, when the device is the CPU
    if kernels is None or not 0 < rows <= NATIVE_MATVEC_ROWS:
        return None
    if isinstance(layer, nn.QuantizedLinear):
        if not (layer.mode == "affine" and layer.bits in NATIVE_MATVEC_BITS and layer.scales.dtype == mx.float32):
            return None
        operands = (layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
        product = kernels.quantized_matvec
    elif isinstance(layer, nn.Linear) and layer.weight.dtype == mx.bfloat16:
        operands, product = (layer.weight,), kernels.bfloat16_matvec
    else:
        return None
    y = product(x.reshape(rows, -1).astype(mx.float32), *operands)
    y = y.reshape(*x.shape[:-1], -1).astype(x.dtype)
    return y + layer.bias if "bias" in layer else y


class PackedWeights(nn.Module):
    """Base of our quantized layers: a float [rows, width] matrix stored quantized as `weight`, `scales`,
    `biases`, the names QuantizedLinear uses (so checkpoints and loaders treat both alike), its rows
    zero-padded to whole groups. The layers' kernels take float weights, so the matrix is dequantized at each
    call: the model is smaller at rest and on disk; a call pays one dequantization (milliseconds per
    million weights on a CPU)."""

    def __init__(self, matrix: mx.array, group_size: int, bits: int, mode: str):
        super().__init__()
        self.group_size, self.bits, self.mode, self.width = group_size, bits, mode, matrix.shape[1]
        matrix = mx.pad(matrix, [(0, 0), (0, -matrix.shape[1] % group_size)])
        self.weight, self.scales, *biases = mx.quantize(matrix, group_size, bits, mode=mode)
        if biases:
            self.biases = biases[0]

    def matrix(self) -> mx.array:
        return dequantized_weight(self)[:, : self.width]


class QuantizableConv(nn.Module):
    """Base of Kokoro's Conv1d (`transposed = False`) and ConvTranspose1d (`transposed = True`): a weight
    [C_out, K, C_in / groups] (see `mlx_tts.conv`), quantized as [C_out, K * C_in / groups]."""

    transposed = False

    @property
    def quantized_width(self) -> int:
        return self.weight.shape[1] * self.weight.shape[2]

    def to_quantized(self, group_size: int = 64, bits: int = 4, mode: str = "affine") -> nn.Module:
        return QuantizedConv(self, group_size, bits, mode)


class QuantizedConv(PackedWeights):
    """A QuantizableConv with its weight quantized (Kokoro's decoder has 3 * 1090 inputs a row: no group size
    divides them, hence the padding)."""

    def __init__(self, conv: QuantizableConv, group_size: int = 64, bits: int = 4, mode: str = "affine"):
        c_out, kernel_size, group_channels = conv.weight.shape
        super().__init__(conv.weight.reshape(c_out, -1), group_size, bits, mode)
        self.kernel_size, self.group_channels = kernel_size, group_channels
        self.transposed, self.stride, self.padding = conv.transposed, conv.stride, conv.padding
        self.groups = conv.groups
        self.dilation = getattr(conv, "dilation", 1)
        self.output_padding = getattr(conv, "output_padding", 0)
        if "bias" in conv:
            self.bias = conv.bias
        self.freeze()

    def __call__(self, x, residual=None, input_adain=None):
        """`residual` and `input_adain` (plain convolutions only): see mlx_tts.conv.conv1d."""
        weight = self.matrix().reshape(-1, self.kernel_size, self.group_channels)
        bias = self.get("bias")
        if self.transposed:
            return conv_transpose1d(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups)
        return conv1d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups, residual, input_adain)
