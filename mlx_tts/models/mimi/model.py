"""Mimi, Kyutai's neural audio codec: 24 kHz audio <-> 12.5 Hz frames of 32 codes.

encode: SEANet encoder (25 Hz) -> causal transformer -> stride-2 downsample (12.5 Hz) -> split RVQ codes.
decode: codes -> centroids -> stride-2 upsample -> causal transformer -> SEANet decoder -> audio.
"""

import math
from dataclasses import dataclass, field, fields

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import layouts
from .quantizer import SplitResidualVectorQuantizer
from .seanet import CausalConv1d, CausalConvTranspose1d, SeanetDecoder, SeanetEncoder, StreamBuffer
from .transformer import Transformer


@dataclass
class ModelArgs:
    """Mimi's hyperparameters, named as in transformers' `MimiConfig`; the defaults are kyutai's Mimi."""

    sampling_rate: int = 24000
    frame_rate: float = 12.5
    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: list = field(default_factory=lambda: [8, 6, 5, 4])
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    upsample_groups: int = 512
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int = 250
    layer_scale_initial_scale: float = 0.01

    # options of transformers' MimiConfig that this implementation supports with one value only
    FIXED = {
        "use_causal_conv": True,
        "use_conv_shortcut": False,
        "pad_mode": "constant",
        "trim_right_ratio": 1.0,
        "audio_channels": 1,
        "hidden_act": "gelu",
        "attention_bias": False,
    }

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        for key, value in cls.FIXED.items():
            if key in config and config[key] != value:
                raise ValueError(f"Mimi config: {key}={config[key]!r} is not supported (only {value!r})")
        vq_dim = config.get("vector_quantization_hidden_dimension")
        if vq_dim is not None and vq_dim != config.get("codebook_dim", vq_dim):
            raise ValueError(
                f"Mimi config: codebook_dim={config['codebook_dim']} differs from "
                f"vector_quantization_hidden_dimension={vq_dim}"
            )
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in config.items() if k in known and v is not None}
        if "codebook_dim" not in args and vq_dim is not None:
            args["codebook_dim"] = vq_dim
        rope = config.get("rope_parameters") or {}
        if "rope_theta" in rope:
            args["rope_theta"] = rope["rope_theta"]
        return cls(**args)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def hop_length(self) -> int:
        """Audio samples per SEANet latent (25 Hz for kyutai's Mimi)."""
        return math.prod(self.upsampling_ratios)

    @property
    def latent_stride(self) -> int:
        stride = math.ceil(self.sampling_rate / self.hop_length) / self.frame_rate
        if stride != int(stride) or stride < 2:
            raise ValueError(
                f"Mimi config: frame_rate {self.frame_rate} must divide the SEANet rate "
                f"{self.sampling_rate}/{self.hop_length} by an integer >= 2"
            )
        return int(stride)

    @property
    def frame_size(self) -> int:
        """Audio samples per codec frame (1920 for kyutai's Mimi)."""
        return self.hop_length * self.latent_stride


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        stride = args.latent_stride
        self.encoder = SeanetEncoder(args)
        self.encoder_transformer = Transformer(args)
        self.downsample = CausalConv1d(
            args.hidden_size, args.hidden_size, 2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )
        self.quantizer = SplitResidualVectorQuantizer(args)
        self.upsample = CausalConvTranspose1d(
            args.hidden_size, args.hidden_size, 2 * stride, stride, groups=args.upsample_groups, bias=False
        )
        self.decoder_transformer = Transformer(args)
        self.decoder = SeanetDecoder(args)

    @property
    def sample_rate(self) -> int:
        return self.args.sampling_rate

    def sanitize(self, weights: dict) -> dict:
        """kyutai's, transformers' (or this package's own) Mimi weights -> this model's layout, float32."""
        return layouts.to_mlx(weights, self.args)

    @property
    def dtype(self):
        return self.downsample.weight.dtype

    def encode(self, audio) -> mx.array:
        """audio [N] or [B, 1, N] at `sample_rate` -> codes [B, num_quantizers, ceil(N / frame_size)]."""
        audio = mx.array(audio) if isinstance(audio, np.ndarray) else audio
        if audio.ndim == 1:
            audio = audio[None, None]
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"Mimi.encode expects audio of shape [N] or [B, 1, N], got {tuple(audio.shape)}")
        if audio.shape[2] == 0:
            raise ValueError("Mimi.encode got empty audio")
        x = self.encoder(audio.swapaxes(1, 2).astype(self.dtype))
        x = self.downsample(self.encoder_transformer(x))
        return self.quantizer.encode(x)

    def decode(self, codes, stream=None) -> mx.array:
        """codes [B, K, T] or [K, T] (K <= num_quantizers) -> audio [B, 1, T * frame_size].

        With `stream` (from `make_stream`) the call continues the previous ones: chunk by chunk, the audio
        is the same as decoding all the codes at once."""
        codes = mx.array(codes) if isinstance(codes, np.ndarray) else codes
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or not 0 < codes.shape[1] <= self.args.num_quantizers:
            raise ValueError(
                f"Mimi.decode expects codes of shape [B, K, T] with 1 <= K <= {self.args.num_quantizers}, "
                f"got {tuple(codes.shape)}"
            )
        upsample_stream, transformer_cache, decoder_stream = stream or (None, None, None)
        x = self.upsample(self.quantizer.decode(codes.astype(mx.int32)), upsample_stream)
        x = self.decoder(self.decoder_transformer(x, transformer_cache), decoder_stream)
        return x.swapaxes(1, 2)

    def make_stream(self):
        """Fresh state for decoding chunk by chunk."""
        return StreamBuffer(), self.decoder_transformer.make_cache(), self.decoder.make_stream()


class StreamingDecoder:
    """Codes in, audio out, chunk by chunk; the chunks joined equal `Model.decode` of all the codes."""

    def __init__(self, model: Model):
        self.model = model
        self.reset()

    def reset(self):
        self.stream = self.model.make_stream()

    def decode(self, codes) -> mx.array:
        """codes [B, K, t] or [K, t] -> the next audio chunk, [B, 1, t * frame_size]."""
        return self.model.decode(codes, self.stream)
