"""Kokoro's building blocks, the text encoder and the prosody predictor.

Activations are channels-last, [B, T, C], MLX's layout for convolutions. Kokoro runs one sequence at a time
(B = 1) without padding, so there are no masks. Weight norm is folded into plain weights when a checkpoint is
converted (see `Model.sanitize`): every convolution here holds a single `weight`.
"""

import math

import mlx.core as mx
import mlx.nn as nn

from ... import ext
from ...activations import adain_snake
from ...conv import conv1d, conv_transpose1d
from ...layers import PackedWeights, QuantizableConv, linear

# Output scale of a residual block: torch.rsqrt(torch.tensor(2)) in float32.
RSQRT2 = 1 / math.sqrt(2)


def _init_weight(shape, fan_in):
    scale = math.sqrt(1 / fan_in)
    return mx.random.uniform(-scale, scale, shape)


class Conv1d(QuantizableConv):
    """weight: [C_out, K, C_in / groups]."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.weight = _init_weight((out_channels, kernel_size, in_channels // groups), in_channels * kernel_size)
        if bias:
            self.bias = mx.zeros((out_channels,))

    def __call__(self, x, residual=None, input_adain=None):
        """`residual`: added to the output; `input_adain`: see `AdaIN1d.conv_input` (both fused into the
        convolution where the device allows)."""
        bias = self.bias if "bias" in self else None
        return conv1d(
            x, self.weight, bias, self.stride, self.padding, self.dilation, self.groups, residual, input_adain
        )


class ConvTranspose1d(QuantizableConv):
    """weight: [C_out, K, C_in / groups] (MLX's layout for transposed convolutions)."""

    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1):
        super().__init__()
        self.stride, self.padding, self.output_padding, self.groups = stride, padding, output_padding, groups
        self.weight = _init_weight((out_channels, kernel_size, in_channels // groups), in_channels * kernel_size)
        self.bias = mx.zeros((out_channels,))

    def __call__(self, x):
        return conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups)


class AdaIN1d(nn.Module):
    """Instance norm over time whose per-channel scale and shift come from the style vector."""

    def __init__(self, style_dim, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.fc = nn.Linear(style_dim, 2 * channels)

    def __call__(self, x, s, snake_alpha=None):
        """With `snake_alpha`, the Snake activation that follows in the generator is fused in."""
        return adain_snake(x, *self.conv_input(s, snake_alpha))

    def conv_input(self, s, snake_alpha=None):
        """This norm (and Snake) for style s as a convolution's `input_adain`: (gamma, beta, alpha, eps)."""
        gamma, beta = mx.split(linear(self.fc, s), 2, axis=-1)
        return gamma, beta, snake_alpha, self.eps


class AdaLayerNorm(nn.Module):
    """Layer norm over channels whose scale and shift come from the style vector."""

    def __init__(self, style_dim, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.fc = nn.Linear(style_dim, 2 * channels)

    def __call__(self, x, s):
        gamma, beta = mx.split(linear(self.fc, s)[:, None, :], 2, axis=-1)
        return (1 + gamma) * mx.fast.layer_norm(x, None, None, self.eps) + beta


class AdainResBlk1d(nn.Module):
    """Residual block with AdaIN; with `upsample`, doubles the frame rate (a depthwise transposed convolution on
    the residual path, nearest-neighbour repetition on the shortcut)."""

    def __init__(self, dim_in, dim_out, style_dim, upsample=False):
        super().__init__()
        self.upsample = upsample
        self.norm1 = AdaIN1d(style_dim, dim_in)
        self.conv1 = Conv1d(dim_in, dim_out, 3, padding=1)
        self.norm2 = AdaIN1d(style_dim, dim_out)
        self.conv2 = Conv1d(dim_out, dim_out, 3, padding=1)
        if dim_in != dim_out:
            self.conv1x1 = Conv1d(dim_in, dim_out, 1, bias=False)
        if upsample:
            self.pool = ConvTranspose1d(dim_in, dim_in, 3, stride=2, padding=1, output_padding=1, groups=dim_in)

    def _shortcut(self, x):
        # A 1x1 convolution commutes with repeating frames: run it before, on half the frames.
        if "conv1x1" in self:
            x = self.conv1x1(x)
        return mx.repeat(x, 2, axis=1) if self.upsample else x

    def _residual(self, x, s):
        x = nn.leaky_relu(self.norm1(x, s), 0.2)
        if self.upsample:
            x = self.pool(x)
        x = nn.leaky_relu(self.norm2(self.conv1(x), s), 0.2)
        return self.conv2(x)

    def __call__(self, x, s):
        return (self._residual(x, s) + self._shortcut(x)) * RSQRT2


@mx.compile
def _lstm_step(gates_x, h, c, w_hh):
    i, f, g, o = mx.split(gates_x + h @ w_hh, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    return mx.sigmoid(o) * mx.tanh(c), c


def bilstm(x, weight_ih, weight_hh, bias):
    """A single-layer bidirectional LSTM over x [B, T, in] (see BiLSTM for the weights' layout)."""
    operands = (x, weight_ih, weight_hh, bias)
    if mx.default_device() == mx.cpu and any(a.dtype != mx.float32 for a in operands):
        # On the CPU a half-precision LSTM runs widened to float32, in the native recurrence (MLX's step-by-step
        # ops in bfloat16 are many times slower); one pass over its weights.
        return bilstm(*(a.astype(mx.float32) for a in operands)).astype(x.dtype)
    B, T, _ = x.shape
    H = weight_hh.shape[-1]
    gates_x = mx.addmm(bias, x, weight_ih.T).reshape(B, T, 2, 4 * H)
    # [2, T, B, 4H], the reverse direction's inputs in its own time order.
    gates_x = mx.stack([gates_x[:, :, 0].swapaxes(0, 1), gates_x[:, ::-1, 1].swapaxes(0, 1)])
    w_hh = weight_hh.swapaxes(1, 2)
    kernels = ext.kernels_for(gates_x, w_hh)
    if kernels is not None:  # the whole recurrence in one native op, the directions on two threads
        hidden = kernels.lstm_recurrence(gates_x, w_hh).swapaxes(1, 2)  # [2, B, T, H]
    else:
        h = c = mx.zeros((2, B, H), dtype=x.dtype)
        steps = []
        for t in range(T):
            h, c = _lstm_step(gates_x[:, t], h, c, w_hh)
            steps.append(h)
        hidden = mx.stack(steps, axis=2)  # [2, B, T, H]
    return mx.concatenate([hidden[0], hidden[1, :, ::-1]], axis=-1)


class BiLSTM(nn.Module):
    """Single-layer bidirectional LSTM (PyTorch's gate order i, f, g, o): [B, T, in] -> [B, T, 2 * hidden].

    Both directions live in one set of arrays, forward first, reverse second:
    weight_ih [2 * 4H, in], weight_hh [2, 4H, H], bias [2 * 4H] (PyTorch's bias_ih + bias_hh).
    The input projection of all steps and both directions is one matmul; only the recurrence runs step by step,
    the two directions together.
    """

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = _init_weight((8 * hidden_size, input_size), hidden_size)
        self.weight_hh = _init_weight((2, 4 * hidden_size, hidden_size), hidden_size)
        self.bias = mx.zeros((8 * hidden_size,))

    def __call__(self, x):
        return bilstm(x, self.weight_ih, self.weight_hh, self.bias)

    @property
    def quantized_width(self) -> int:
        return self.weight_ih.shape[1] + self.hidden_size

    def to_quantized(self, group_size=64, bits=4, mode="affine"):
        return QuantizedBiLSTM(self, group_size, bits, mode)


class QuantizedBiLSTM(PackedWeights):
    """A BiLSTM with its input and recurrent weights quantized as one [8H, in + H] matrix: both have 8H rows
    (weight_hh's two directions stacked), so [weight_ih | weight_hh]. Dequantized once per sequence."""

    def __init__(self, lstm: BiLSTM, group_size=64, bits=4, mode="affine"):
        H = lstm.hidden_size
        matrix = mx.concatenate([lstm.weight_ih, lstm.weight_hh.reshape(8 * H, H)], axis=1)
        super().__init__(matrix, group_size, bits, mode)
        self.hidden_size, self.bias = H, lstm.bias
        self.freeze()

    def __call__(self, x):
        H = self.hidden_size
        weight_ih, weight_hh = mx.split(self.matrix(), [self.width - H], axis=1)
        return bilstm(x, weight_ih, weight_hh.reshape(2, 4 * H, H), self.bias)


class TextEncoder(nn.Module):
    """Phoneme ids [1, N] -> acoustic text features [1, N, channels] (the decoder's `asr` input)."""

    def __init__(self, channels, kernel_size, depth, n_symbols):
        super().__init__()
        self.embedding = nn.Embedding(n_symbols, channels)
        padding = (kernel_size - 1) // 2
        self.cnn = [
            [Conv1d(channels, channels, kernel_size, padding=padding), nn.LayerNorm(channels, eps=1e-5)]
            for _ in range(depth)
        ]
        self.lstm = BiLSTM(channels, channels // 2)

    def __call__(self, input_ids):
        x = self.embedding(input_ids)
        for conv, norm in self.cnn:
            x = nn.leaky_relu(norm(conv(x)), 0.2)
        return self.lstm(x)


class DurationEncoder(nn.Module):
    """ALBERT features [1, N, d_model] -> style-conditioned prosody features [1, N, d_model + style_dim].

    `lstms` alternates BiLSTM and AdaLayerNorm, as in the checkpoints."""

    def __init__(self, style_dim, d_model, nlayers):
        super().__init__()
        self.lstms = []
        for _ in range(nlayers):
            self.lstms += [BiLSTM(d_model + style_dim, d_model // 2), AdaLayerNorm(style_dim, d_model)]

    def __call__(self, x, style):
        s = mx.broadcast_to(style[:, None, :], (*x.shape[:2], style.shape[-1]))
        x = mx.concatenate([x, s], axis=-1)
        for lstm, norm in zip(self.lstms[::2], self.lstms[1::2]):
            x = mx.concatenate([norm(lstm(x), style), s], axis=-1)
        return x


class ProsodyPredictor(nn.Module):
    def __init__(self, style_dim, d_hid, nlayers, max_dur):
        super().__init__()
        self.text_encoder = DurationEncoder(style_dim, d_hid, nlayers)
        self.lstm = BiLSTM(d_hid + style_dim, d_hid // 2)
        self.duration_proj = nn.Linear(d_hid, max_dur)
        self.shared = BiLSTM(d_hid + style_dim, d_hid // 2)
        self.F0 = self._curve_blocks(d_hid, style_dim)
        self.N = self._curve_blocks(d_hid, style_dim)
        self.F0_proj = Conv1d(d_hid // 2, 1, 1)
        self.N_proj = Conv1d(d_hid // 2, 1, 1)

    @staticmethod
    def _curve_blocks(d_hid, style_dim):
        return [
            AdainResBlk1d(d_hid, d_hid, style_dim),
            AdainResBlk1d(d_hid, d_hid // 2, style_dim, upsample=True),
            AdainResBlk1d(d_hid // 2, d_hid // 2, style_dim),
        ]

    def duration_logits(self, d):
        """Prosody features [1, N, C] -> logits [1, N, max_dur]; a token lasts sum(sigmoid(logits)) frames."""
        return linear(self.duration_proj, self.lstm(d))

    def f0_n(self, en, style):
        """Frame-level prosody features [1, F, C] -> F0 and noise (energy) curves [1, 2F]."""
        x = self.shared(en)
        f0, n = x, x
        for f0_block, n_block in zip(self.F0, self.N):
            f0, n = f0_block(f0, style), n_block(n, style)
        return self.F0_proj(f0)[..., 0], self.N_proj(n)[..., 0]
