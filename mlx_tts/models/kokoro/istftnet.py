"""Kokoro's decoder: AdaIN residual blocks, then an iSTFTNet generator driven by a harmonic-plus-noise source.

Channels-last activations ([B, T, C]) throughout, like modules.py.
"""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ...activations import cos, exp, sin
from ...layers import linear
from .modules import AdaIN1d, AdainResBlk1d, Conv1d, ConvTranspose1d

SAMPLE_RATE = 24000
HARMONICS = 9  # the fundamental and 8 overtones
SINE_AMP = 0.1
NOISE_STD = 0.003  # source noise where voiced; unvoiced stretches get SINE_AMP / 3
VOICED_THRESHOLD = 10  # Hz
# exp() of a larger log-magnitude could overflow float32 in the inverse STFT's sums.
MAX_LOG_MAGNITUDE = 80.0


class AdaINResBlock1(nn.Module):
    """The generator's residual block: per dilation, AdaIN -> Snake -> dilated conv -> AdaIN -> Snake -> conv."""

    def __init__(self, channels, kernel_size, dilations, style_dim):
        super().__init__()
        self.convs1 = [
            Conv1d(channels, channels, kernel_size, padding=d * (kernel_size - 1) // 2, dilation=d) for d in dilations
        ]
        self.convs2 = [Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations]
        self.adain1 = [AdaIN1d(style_dim, channels) for _ in dilations]
        self.adain2 = [AdaIN1d(style_dim, channels) for _ in dilations]
        self.alpha1 = [mx.ones((channels,)) for _ in dilations]
        self.alpha2 = [mx.ones((channels,)) for _ in dilations]

    def __call__(self, x, s):
        on_cpu = mx.default_device() == mx.cpu
        for conv1, conv2, norm1, norm2, alpha1, alpha2 in zip(
            self.convs1, self.convs2, self.adain1, self.adain2, self.alpha1, self.alpha2
        ):
            # The convolutions apply the norms and Snakes to their input as they read it, and conv2 adds the
            # residual. Evaluated step by step: as one lazy graph the block's steps held ~12 intermediates of
            # x's size at once (~750 MB at the generator's last stage for 27 s of audio).
            h = conv1(x, input_adain=norm1.conv_input(s, alpha1))
            if on_cpu:  # conv1 done, conv2's output can take over x's memory (when the caller holds no x)
                mx.eval(h)
            x = conv2(h, input_adain=norm2.conv_input(s, alpha2), residual=x)
            del h
            mx.eval(x)
        return x


def _linear_upsample_weights(length, scale):
    """Source indices and weights of PyTorch's `interpolate(mode="linear", scale_factor=scale)`
    (align_corners=False), computed in float32 the way it does."""
    position = np.float32(1 / scale) * (np.arange(length * scale, dtype=np.float32) + np.float32(0.5))
    position = np.maximum(position - np.float32(0.5), np.float32(0))
    index0 = np.minimum(np.floor(position).astype(np.int32), length - 1)
    index1 = np.minimum(index0 + 1, length - 1)
    weight1 = np.minimum(position - index0.astype(np.float32), np.float32(1))
    return mx.array(index0), mx.array(index1), mx.array(1 - weight1)[:, None], mx.array(weight1)[:, None]


class SourceModule(nn.Module):
    """Harmonic-plus-noise excitation: F0 curve [B, L] -> waveform [B, L * upsample_scale] in [-1, 1].

    Sines at F0 and its overtones (silent where unvoiced) plus Gaussian noise, merged by a linear layer and tanh.
    The reference also draws a random initial phase for the overtones, but its downsampling interpolation never
    reads the sample that holds it, so it has no effect and is not drawn here.
    """

    def __init__(self, upsample_scale):
        super().__init__()
        self.upsample_scale = upsample_scale
        self.l_linear = nn.Linear(HARMONICS, 1)

    def __call__(self, f0, noise=None):
        """noise: standard normal [B, L * upsample_scale, HARMONICS], one per harmonic as the reference draws
        it. Without it the noise is drawn from mx.random in its merged form: the linear layer that mixes the
        harmonics turns their independent noises into one Gaussian per sample whose standard deviation is the
        norm of its weights times theirs, so one normal per sample has the same distribution as nine."""
        scale = self.upsample_scale
        noise_shape = (f0.shape[0], f0.shape[1] * scale, HARMONICS)
        if noise is not None and tuple(noise.shape) != noise_shape:
            raise ValueError(f"source noise has shape {tuple(noise.shape)}, expected {noise_shape}")
        # Phase increments per sample, in turns. F0 is constant over each run of `scale` samples, so the
        # reference's upsample-then-average-back gives exactly these values at the F0 rate.
        steps = (f0[..., None] * mx.arange(1, HARMONICS + 1, dtype=f0.dtype)) / SAMPLE_RATE % 1
        # A float64 running sum, as PyTorch's CPU cumsum accumulates: the phase grows large over long inputs.
        # (On the CPU stream: GPUs have no float64.)
        with mx.stream(mx.cpu):
            phase = mx.cumsum(steps.astype(mx.float64), axis=1).astype(f0.dtype)
        phase = phase * 2 * math.pi * scale
        index0, index1, weight0, weight1 = _linear_upsample_weights(f0.shape[1], scale)
        phase = phase[:, index0] * weight0 + phase[:, index1] * weight1
        voiced = mx.repeat(f0 > VOICED_THRESHOLD, scale, axis=1)[..., None]
        if noise is not None:
            sines = mx.where(voiced, sin(phase) * SINE_AMP + NOISE_STD * noise, (SINE_AMP / 3) * noise)
            return mx.tanh(linear(self.l_linear, sines))[..., 0]
        weight = self.l_linear.weight[0]
        noise_std = mx.where(voiced[..., 0], NOISE_STD, SINE_AMP / 3) * mx.sqrt(mx.sum(weight * weight))
        harmonics = mx.where(voiced, sin(phase) * SINE_AMP, 0.0) @ weight
        return mx.tanh(harmonics + self.l_linear.bias + noise_std * mx.random.normal(noise_shape[:2]))


class STFT:
    """STFT and inverse STFT as in torch.stft / torch.istft (center=True, reflect padding, periodic Hann window,
    inverse normalized by the summed squared window). The transforms are matmuls with a windowed DFT basis."""

    def __init__(self, n_fft, hop):
        self.n_fft, self.hop = n_fft, hop
        n_bins = n_fft // 2 + 1
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        angle = 2 * np.pi * np.outer(np.arange(n_fft), np.arange(n_bins)) / n_fft  # [n_fft, n_bins]
        self.analysis = mx.array(np.concatenate([np.cos(angle), -np.sin(angle)], 1) * window[:, None], mx.float32)
        # DC and Nyquist bins of a real signal have a zero imaginary part.
        real_bins = np.zeros(n_bins, bool)
        real_bins[0] = True
        real_bins[-1] = n_fft % 2 == 0
        # irfft: interior bins count twice; the imaginary parts of DC and Nyquist are ignored.
        coef = np.where(real_bins, 1.0, 2.0) / n_fft
        real_rows = np.cos(angle).T * coef[:, None]
        imag_rows = -np.sin(angle).T * coef[:, None]
        imag_rows[real_bins] = 0
        self.synthesis = mx.array(np.concatenate([real_rows, imag_rows]) * window, mx.float32)
        self.window_squared = mx.array(window**2, mx.float32)
        self.real_bins = mx.array(real_bins)

    def transform(self, x):
        """x [B, N] -> magnitude, phase [B, N // hop + 1, n_fft // 2 + 1]."""
        pad = self.n_fft // 2
        x = mx.concatenate([x[:, pad:0:-1], x, x[:, -2 : -pad - 2 : -1]], axis=1)
        n_frames = (x.shape[1] - self.n_fft) // self.hop + 1
        frames = mx.as_strided(x, (x.shape[0], n_frames, self.n_fft), (x.shape[1], self.hop, 1))
        real, imag = mx.split(frames @ self.analysis, 2, axis=-1)
        # An exact +0 there, as an FFT gives: negative values then have angle +pi, not -pi.
        imag = mx.where(self.real_bins, 0.0, imag)
        return mx.sqrt(real * real + imag * imag), mx.arctan2(imag, real)

    def _overlap_add(self, frames):
        """[B, F, n_fft] -> [B, (F - 1) * hop + n_fft]."""
        B, F, n = frames.shape
        m = -(-n // self.hop)
        frames = mx.pad(frames, [(0, 0), (0, 0), (0, m * self.hop - n)]).reshape(B, F, m, self.hop)
        out = sum(mx.pad(frames[:, :, k], [(0, 0), (k, m - 1 - k), (0, 0)]) for k in range(m))
        return out.reshape(B, -1)[:, : (F - 1) * self.hop + n]

    def inverse(self, magnitude, phase):
        """magnitude, phase [B, F, n_fft // 2 + 1] -> waveform [B, (F - 1) * hop]."""
        spectrum = mx.concatenate([magnitude * cos(phase), magnitude * sin(phase)], axis=-1)
        y = self._overlap_add(spectrum @ self.synthesis)
        envelope = self._overlap_add(mx.broadcast_to(self.window_squared, (1, phase.shape[1], self.n_fft)))
        pad = self.n_fft // 2
        length = (phase.shape[1] - 1) * self.hop
        return y[:, pad : pad + length] / envelope[:, pad : pad + length]


class Generator(nn.Module):
    def __init__(
        self,
        style_dim,
        resblock_kernel_sizes,
        upsample_rates,
        upsample_initial_channel,
        resblock_dilation_sizes,
        upsample_kernel_sizes,
        gen_istft_n_fft,
        gen_istft_hop_size,
    ):
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.upsample_scale = math.prod(upsample_rates) * gen_istft_hop_size
        self.m_source = SourceModule(self.upsample_scale)
        self.ups, self.resblocks, self.noise_convs, self.noise_res = [], [], [], []
        n_spec = gen_istft_n_fft + 2  # magnitudes and phases of the source's STFT
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            channels = upsample_initial_channel // 2 ** (i + 1)
            self.ups.append(ConvTranspose1d(2 * channels, channels, kernel, rate, padding=(kernel - rate) // 2))
            self.resblocks += [
                AdaINResBlock1(channels, k, d, style_dim)
                for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
            ]
            if i + 1 < len(upsample_rates):
                stride = math.prod(upsample_rates[i + 1 :])
                self.noise_convs.append(Conv1d(n_spec, channels, 2 * stride, stride, padding=(stride + 1) // 2))
                self.noise_res.append(AdaINResBlock1(channels, 7, (1, 3, 5), style_dim))
            else:
                self.noise_convs.append(Conv1d(n_spec, channels, 1))
                self.noise_res.append(AdaINResBlock1(channels, 11, (1, 3, 5), style_dim))
        self.conv_post = Conv1d(channels, n_spec, 7, padding=3)
        self.stft = STFT(gen_istft_n_fft, gen_istft_hop_size)

    def source_features(self, f0, noise=None):
        """F0 [1, L] -> the harmonic source's STFT, magnitudes then phases: [1, frames, n_fft + 2]."""
        return mx.concatenate(self.stft.transform(self.m_source(f0, noise)), axis=-1)

    def __call__(self, x, s, f0, noise=None):
        """x [1, L, C] features at the F0 rate, f0 [1, L] -> waveform [1, L * upsample_scale]."""
        source = self.source_features(f0, noise)
        last = len(self.ups) - 1
        for i, (up, noise_conv, noise_res) in enumerate(zip(self.ups, self.noise_convs, self.noise_res)):
            x = nn.leaky_relu(x, 0.1)
            x_source = noise_res(noise_conv(source), s)
            x = up(x)
            if i == last:  # reflection padding of one frame on the left
                x = mx.concatenate([x[:, 1:2], x], axis=1)
            x = x + x_source
            del x_source
            # Stage by stage and branch by branch, so that only the running sum, the stage's input and one
            # branch's intermediates are alive: [frames, 128] at the last stage, ~60 MB each for 27 s of audio.
            mx.eval(x)
            total = None
            for block in self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]:
                total = block(x, s) if total is None else total + block(x, s)
                mx.eval(total)
            x = total / self.num_kernels
        x = self.conv_post(nn.leaky_relu(x, 0.01))
        log_magnitude, phase = mx.split(x, 2, axis=-1)
        magnitude = exp(mx.minimum(log_magnitude, MAX_LOG_MAGNITUDE))
        return self.stft.inverse(magnitude, sin(phase))


class Decoder(nn.Module):
    """Frame-level text features [1, F, dim_in], F0 and noise curves [1, 2F] and a timbre style -> waveform."""

    def __init__(self, dim_in, style_dim, istftnet: dict):
        super().__init__()
        hidden, res_channels = 1024, 64
        concat_dim = hidden + res_channels + 2
        self.encode = AdainResBlk1d(dim_in + 2, hidden, style_dim)
        self.decode = [AdainResBlk1d(concat_dim, hidden, style_dim) for _ in range(3)]
        self.decode.append(AdainResBlk1d(concat_dim, istftnet["upsample_initial_channel"], style_dim, upsample=True))
        self.F0_conv = Conv1d(1, 1, 3, stride=2, padding=1)
        self.N_conv = Conv1d(1, 1, 3, stride=2, padding=1)
        self.asr_res = Conv1d(dim_in, res_channels, 1)
        self.generator = Generator(style_dim, **istftnet)

    def __call__(self, asr, f0_curve, n_curve, s, noise=None):
        f0 = self.F0_conv(f0_curve[..., None])
        n = self.N_conv(n_curve[..., None])
        x = self.encode(mx.concatenate([asr, f0, n], axis=-1), s)
        asr_res = self.asr_res(asr)
        for block in self.decode:
            x = block(mx.concatenate([x, asr_res, f0, n], axis=-1), s)
        return self.generator(x, s, f0_curve, noise)
