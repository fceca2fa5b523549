"""SEANet: Mimi's convolutional encoder (audio -> 25 Hz latents) and decoder (latents -> audio).

Every convolution is causal, so the decoder can run chunk by chunk: a `StreamBuffer` per convolution holds
the input tail a convolution still needs, or the overlapping output a transposed convolution still owes.
Tensors are [batch, time, channels].
"""

import mlx.core as mx
import mlx.nn as nn

from ...conv import conv1d, conv_transpose1d


class StreamBuffer:
    """What one convolution carries from a streamed chunk to the next."""

    def __init__(self):
        self.tail = None

    def prepend_context(self, x: mx.array, size: int) -> mx.array:
        """`x` preceded by the last `size` input frames seen (zeros before the first chunk)."""
        if self.tail is None:
            self.tail = mx.zeros((x.shape[0], size, x.shape[2]), x.dtype)
        x = mx.concatenate([self.tail, x], axis=1)
        self.tail = x[:, x.shape[1] - size :]
        return x

    def overlap_add(self, y: mx.array, overlap: int) -> mx.array:
        """The complete frames of `y` once the previous chunk's overlap is added; keeps the new overlap."""
        if self.tail is not None:
            y = mx.concatenate([y[:, :overlap] + self.tail, y[:, overlap:]], axis=1)
        self.tail = y[:, y.shape[1] - overlap :]
        return y[:, : y.shape[1] - overlap]


def _pad_time(x: mx.array, left: int, right: int, mode: str) -> mx.array:
    if mode == "replicate":
        parts = [mx.repeat(x[:, :1], left, axis=1), x, mx.repeat(x[:, -1:], right, axis=1)]
        return mx.concatenate([p for p in parts if p.shape[1]], axis=1)
    return mx.pad(x, [(0, 0), (left, right), (0, 0)])


class CausalConv1d(nn.Module):
    """Conv1d padded on the left by (kernel - stride), and on the right up to a whole number of strides."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, bias=True, pad_mode="constant"):
        super().__init__()
        self.weight = mx.zeros((out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self.stride = stride
        self.dilation = dilation
        self.context = (kernel_size - 1) * dilation + 1 - stride
        self.pad_mode = pad_mode

    def __call__(self, x: mx.array, stream: StreamBuffer = None) -> mx.array:
        if stream is not None:  # streaming is only used with stride 1, where no right padding is needed
            x = stream.prepend_context(x, self.context) if self.context else x
        else:
            extra = -x.shape[1] % self.stride
            x = _pad_time(x, self.context, extra, self.pad_mode)
        return conv1d(x, self.weight, self.get("bias"), stride=self.stride, dilation=self.dilation)


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d with its last (kernel - stride) frames trimmed: `stride` output frames per input frame."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, groups=1, bias=True):
        super().__init__()
        self.weight = mx.zeros((out_channels, kernel_size, in_channels // groups))
        if bias:
            self.bias = mx.zeros((out_channels,))
        self.stride = stride
        self.groups = groups
        self.overlap = kernel_size - stride

    def __call__(self, x: mx.array, stream: StreamBuffer = None) -> mx.array:
        y = conv_transpose1d(x, self.weight, stride=self.stride, groups=self.groups)
        # the bias is added after the overlap-add, so that frames split across chunks get it once
        y = stream.overlap_add(y, self.overlap) if stream is not None else y[:, : y.shape[1] - self.overlap]
        return y + self.bias if "bias" in self else y


class ResidualUnit(nn.Module):
    def __init__(self, dim, hidden, kernel_size, dilation):
        super().__init__()
        self.conv1 = CausalConv1d(dim, hidden, kernel_size, dilation=dilation)
        self.conv2 = CausalConv1d(hidden, dim, 1)

    def __call__(self, x, stream=None):
        return x + self.conv2(nn.elu(self.conv1(nn.elu(x), stream)))

    def make_stream(self):
        return StreamBuffer()


class EncoderBlock(nn.Module):
    def __init__(self, dim, ratio, args):
        super().__init__()
        self.residuals = [
            ResidualUnit(dim, dim // args.compress, args.residual_kernel_size, args.dilation_growth_rate**j)
            for j in range(args.num_residual_layers)
        ]
        self.downsample = CausalConv1d(dim, 2 * dim, 2 * ratio, stride=ratio)

    def __call__(self, x):
        for unit in self.residuals:
            x = unit(x)
        return self.downsample(nn.elu(x))


class SeanetEncoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.init_conv = CausalConv1d(args.audio_channels, args.num_filters, args.kernel_size)
        dims = [args.num_filters * 2**i for i in range(len(args.upsampling_ratios))]
        self.blocks = [EncoderBlock(d, r, args) for d, r in zip(dims, reversed(args.upsampling_ratios))]
        self.final_conv = CausalConv1d(2 * dims[-1], args.hidden_size, args.last_kernel_size)

    def __call__(self, x):
        x = self.init_conv(x)
        for block in self.blocks:
            x = block(x)
        return self.final_conv(nn.elu(x))


class DecoderBlock(nn.Module):
    def __init__(self, dim, ratio, args):
        super().__init__()
        self.upsample = CausalConvTranspose1d(dim, dim // 2, 2 * ratio, stride=ratio)
        self.residuals = [
            ResidualUnit(dim // 2, dim // 2 // args.compress, args.residual_kernel_size, args.dilation_growth_rate**j)
            for j in range(args.num_residual_layers)
        ]

    def __call__(self, x, stream=None):
        upsample_stream, residual_streams = stream or (None, [None] * len(self.residuals))
        x = self.upsample(nn.elu(x), upsample_stream)
        for unit, unit_stream in zip(self.residuals, residual_streams):
            x = unit(x, unit_stream)
        return x

    def make_stream(self):
        return StreamBuffer(), [unit.make_stream() for unit in self.residuals]


class SeanetDecoder(nn.Module):
    def __init__(self, args):
        super().__init__()
        n = len(args.upsampling_ratios)
        dims = [args.num_filters * 2 ** (n - i) for i in range(n)]
        self.init_conv = CausalConv1d(args.hidden_size, dims[0], args.kernel_size)
        self.blocks = [DecoderBlock(d, r, args) for d, r in zip(dims, args.upsampling_ratios)]
        self.final_conv = CausalConv1d(args.num_filters, args.audio_channels, args.last_kernel_size)

    def __call__(self, x, stream=None):
        init_stream, block_streams, final_stream = stream or (None, [None] * len(self.blocks), None)
        x = self.init_conv(x, init_stream)
        for block, block_stream in zip(self.blocks, block_streams):
            x = block(x, block_stream)
        return self.final_conv(nn.elu(x), final_stream)

    def make_stream(self):
        """Fresh streaming state: one buffer per convolution that needs one."""
        return StreamBuffer(), [block.make_stream() for block in self.blocks], StreamBuffer()
