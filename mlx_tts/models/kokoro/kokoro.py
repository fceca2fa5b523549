"""Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder): phonemes and a voice style -> 24 kHz audio.

Stages: ALBERT reads the phonemes; the prosody predictor turns its features and the voice's prosody style into a
duration per phoneme (in frames of 600 samples) and, once the features are spread over those frames, F0 and noise
curves; the decoder turns the text encoder's frame-level features, both curves and the voice's timbre into audio.
"""

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ...checkpoint import torch_conv_transpose_weight, torch_conv_weight
from ...layers import linear
from .albert import Albert, AlbertArgs
from .istftnet import HARMONICS, SAMPLE_RATE, Decoder
from .modules import ProsodyPredictor, TextEncoder

ISTFTNET_FIELDS = (
    "upsample_rates",
    "upsample_kernel_sizes",
    "upsample_initial_channel",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "gen_istft_n_fft",
    "gen_istft_hop_size",
)


@dataclass
class ModelArgs:
    hidden_dim: int
    style_dim: int
    n_token: int
    n_layer: int
    max_dur: int
    text_encoder_kernel_size: int
    istftnet: dict
    plbert: dict
    vocab: dict

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        """From Kokoro's config.json; other keys (dim_in, n_mels, dropout, quantization, ...) are ignored."""
        missing = [name for name in cls.__dataclass_fields__ if name not in config]
        if "istftnet" in config:
            missing += [f"istftnet.{name}" for name in ISTFTNET_FIELDS if name not in config["istftnet"]]
        if missing:
            raise ValueError(f"Kokoro config is missing {', '.join(missing)}")
        args = cls(**{name: config[name] for name in cls.__dataclass_fields__})
        args.istftnet = {name: args.istftnet[name] for name in ISTFTNET_FIELDS}
        return args


class ModelOutput(NamedTuple):
    audio: mx.array  # [samples], float32 at 24 kHz
    durations: mx.array  # [N] int32: frames (of `Model.frame_size` samples) per token, including the two pads


class Model(nn.Module):
    sample_rate = SAMPLE_RATE

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        albert = AlbertArgs.from_dict(args.plbert, vocab_size=args.n_token)
        self.max_phonemes = albert.max_position_embeddings - 2  # the ids are wrapped in two pads
        self.bert = Albert(albert)
        self.bert_encoder = nn.Linear(albert.hidden_size, args.hidden_dim)
        self.predictor = ProsodyPredictor(args.style_dim, args.hidden_dim, args.n_layer, args.max_dur)
        self.text_encoder = TextEncoder(args.hidden_dim, args.text_encoder_kernel_size, args.n_layer, args.n_token)
        self.decoder = Decoder(args.hidden_dim, args.style_dim, args.istftnet)
        # Durations count frames at the predictor's rate; F0 runs at twice that rate.
        self.frame_size = 2 * self.decoder.generator.upsample_scale

    @property
    def vocab(self) -> dict:
        return self.args.vocab

    def phonemes_to_ids(self, phonemes: str) -> mx.array:
        """Token ids [1, N + 2], wrapped in the pad id 0. Symbols outside the vocabulary are skipped (as
        hexgrad's KModel does); more than `max_phonemes` known symbols is an error."""
        ids = [self.vocab[p] for p in phonemes if p in self.vocab]
        self._check_length(len(ids))
        return mx.array([[0, *ids, 0]], dtype=mx.int32)

    def _check_length(self, n_phonemes: int):
        if n_phonemes > self.max_phonemes:
            raise ValueError(
                f"{n_phonemes} phonemes is too long: Kokoro reads at most {self.max_phonemes} per call; "
                "split the text into shorter pieces"
            )

    def _split_style(self, ref_s: mx.array):
        """A voice row [1, 2 * style_dim] -> (timbre for the decoder, style for the prosody predictor)."""
        expected = (1, 2 * self.args.style_dim)
        if tuple(ref_s.shape) != expected:
            raise ValueError(f"voice style has shape {tuple(ref_s.shape)}, expected {expected}")
        return ref_s[:, : self.args.style_dim], ref_s[:, self.args.style_dim :]

    def duration_logits(self, input_ids: mx.array, ref_s: mx.array):
        """-> (logits [1, N, max_dur], prosody features [1, N, hidden_dim + style_dim])."""
        _, style = self._split_style(ref_s)
        d = self.predictor.text_encoder(linear(self.bert_encoder, self.bert(input_ids)), style)
        return self.predictor.duration_logits(d), d

    @staticmethod
    def durations_from_logits(logits: mx.array, speed: float = 1.0) -> mx.array:
        """Frames per token [N] (int32): round(sum(sigmoid(logits)) / speed), at least 1."""
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        frames = mx.round(mx.sigmoid(logits).sum(axis=-1) / speed)
        return mx.maximum(frames, 1).astype(mx.int32)[0]

    @staticmethod
    def expand_to_frames(x: mx.array, durations: mx.array) -> mx.array:
        """Repeat each token's features [1, N, C] over its frames -> [1, sum(durations), C]."""
        token_of_frame = np.repeat(np.arange(x.shape[1]), np.array(durations))
        return x[:, mx.array(token_of_frame)]

    def f0_n_curves(self, d: mx.array, durations: mx.array, ref_s: mx.array):
        """Prosody features [1, N, C] and durations -> F0 and noise curves [1, 2 * frames]."""
        _, style = self._split_style(ref_s)
        return self.predictor.f0_n(self.expand_to_frames(d, durations), style)

    def asr_features(self, input_ids: mx.array, durations: mx.array) -> mx.array:
        """The text encoder's features spread over the frames: [1, frames, hidden_dim]."""
        return self.expand_to_frames(self.text_encoder(input_ids), durations)

    def source_noise_shape(self, n_frames: int) -> tuple:
        """Shape of the standard normal noise the decoder's harmonic source draws for `n_frames` frames."""
        return (1, n_frames * self.frame_size, HARMONICS)

    def decode(self, asr, f0, n, ref_s, source_noise: mx.array | None = None) -> mx.array:
        """-> audio [1, frames * frame_size]. `source_noise` (see `source_noise_shape`) makes the output
        independent of mx.random; without it the noise is drawn there."""
        timbre, _ = self._split_style(ref_s)
        return self.decoder(asr, f0, n, timbre, source_noise)

    def __call__(
        self,
        phonemes: str | mx.array,
        ref_s: mx.array,
        speed: float = 1.0,
        source_noise: mx.array | None = None,
    ) -> ModelOutput:
        """phonemes: a phoneme string or token ids [1, N] (pads included); ref_s: the voice row [1, 256] for
        this length. The audio comes back unevaluated."""
        if isinstance(phonemes, str):
            input_ids = self.phonemes_to_ids(phonemes)
        else:
            input_ids = phonemes
            self._check_length(input_ids.shape[1] - 2)
        logits, d = self.duration_logits(input_ids, ref_s)
        durations = self.durations_from_logits(logits, speed)
        # The frame count sets every later shape, so the durations are computed here.
        if not np.isfinite(np.array(logits)).all():
            raise ValueError("the duration predictor returned non-finite values: the weights are broken")
        f0, n = self.f0_n_curves(d, durations, ref_s)
        audio = self.decode(self.asr_features(input_ids, durations), f0, n, ref_s, source_noise)
        return ModelOutput(audio[0], durations)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """Torch layout (hexgrad KModel's state dicts, prefixed by submodule) -> this model's layout."""
        return _sanitize_torch(weights)

    @staticmethod
    def sanitize_mlx_audio(weights: dict) -> dict:
        """MLX-Audio's Kokoro layout (what its save and convert write, float or with quantized layers, e.g.
        mlx-community/Kokoro-82M-{4,6,8}bit) -> this model's layout."""
        return _sanitize_torch(_mlx_audio_to_torch(weights))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint layouts. Which layout a dict is in is said by the caller (kokoro.convert.detect_layout).

# Renamed module paths, torch layout -> ours.
RENAMES = (
    ("bert.encoder.albert_layer_groups.0.albert_layers.0.", "bert.encoder.layer."),
    ("predictor.duration_proj.linear_layer.", "predictor.duration_proj."),
    ("decoder.asr_res.0.", "decoder.asr_res."),
)
LSTM_PARTS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
# Convolutions whose weights are stored plain (not weight-normed) in the checkpoints.
PLAIN_CONVS = re.compile(r"(noise_convs\.\d+|F0_proj|N_proj)$")
# The affine parameters KModel's AdaIN instance norms carry for ONNX export, never trained.
ADAIN_NORM = re.compile(r"\.(norm[12]|adain[12]\.\d+)\.norm\.(weight|bias)$")
TEXT_ENCODER_NORM = re.compile(r"^(text_encoder\.cnn\.\d+\.1)\.(gamma|beta)$")
UNUSED = re.compile(r"(^bert\.pooler\.|position_ids$)")


def _rename(key: str) -> str:
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def fold_weight_norm(v: mx.array, g: mx.array) -> mx.array:
    """w = g * v / |v| (norm over all axes but the first). Channels pruned to zero (g = 0 or v = 0) stay exactly
    zero instead of turning into 0 / 0 = NaN."""
    norm = mx.sqrt(mx.sum(v.astype(mx.float32) ** 2, axis=tuple(range(1, v.ndim)), keepdims=True))
    live = norm > 0
    scale = mx.where(live, g.astype(mx.float32) / mx.where(live, norm, 1), 0)
    return (v * scale).astype(v.dtype)


def _merge_lstm(prefix: str, parts: dict) -> dict:
    directions = ("", "_reverse")
    missing = [f"{prefix}.{p}{d}" for d in directions for p in LSTM_PARTS if p + d not in parts]
    if missing:
        raise ValueError(f"LSTM weights missing: {', '.join(missing)}")
    return {
        f"{prefix}.weight_ih": mx.concatenate([parts[f"weight_ih_l0{d}"] for d in directions]),
        f"{prefix}.weight_hh": mx.stack([parts[f"weight_hh_l0{d}"] for d in directions]),
        f"{prefix}.bias": mx.concatenate([parts[f"bias_ih_l0{d}"] + parts[f"bias_hh_l0{d}"] for d in directions]),
    }


def _sanitize_torch(weights: dict) -> dict:
    weights = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in weights.items()}
    out = {}
    lstms = defaultdict(dict)
    for key, value in weights.items():
        module, _, name = key.rpartition(".")
        if UNUSED.search(key) or name == "weight_g":
            continue
        if ADAIN_NORM.search(key):
            identity = mx.ones_like(value) if name == "weight" else mx.zeros_like(value)
            if not mx.array_equal(value, identity).item():
                raise ValueError(f"{key}: AdaIN's instance norm has a non-identity affine, which Kokoro never has")
            continue
        if name.removesuffix("_reverse") in LSTM_PARTS:
            lstms[module][name] = value
            continue
        if name == "weight_v":
            g_key = f"{module}.weight_g"
            if g_key not in weights:
                raise ValueError(f"{g_key} is missing (needed with {key})")
            value = fold_weight_norm(value, weights[g_key])
            if module.endswith(".pool"):  # depthwise: one group per channel
                value = torch_conv_transpose_weight(value, groups=value.shape[0])
            elif ".ups." in module:
                value = torch_conv_transpose_weight(value, groups=1)
            else:
                value = torch_conv_weight(value)
            key = f"{module}.weight"
        elif name == "weight" and PLAIN_CONVS.search(module):
            value = torch_conv_weight(value)
        elif re.search(r"\.alpha[12]\.\d+$", key):
            value = value.reshape(-1)
        elif match := TEXT_ENCODER_NORM.match(key):
            key = f"{match[1]}.{'weight' if match[2] == 'gamma' else 'bias'}"
        out[_rename(key)] = value
    for module, parts in lstms.items():
        out.update(_merge_lstm(_rename(module), parts))
    return out


# MLX-Audio's LSTM names -> PyTorch's.
MLX_AUDIO_LSTM = {
    "Wx_forward": "weight_ih_l0",
    "Wh_forward": "weight_hh_l0",
    "bias_ih_forward": "bias_ih_l0",
    "bias_hh_forward": "bias_hh_l0",
    "Wx_backward": "weight_ih_l0_reverse",
    "Wh_backward": "weight_hh_l0_reverse",
    "bias_ih_backward": "bias_ih_l0_reverse",
    "bias_hh_backward": "bias_hh_l0_reverse",
}


def _mlx_audio_to_torch(weights: dict) -> dict:
    """MLX-Audio keeps PyTorch's module names, with its own LSTM names, `weight`/`bias` for the text encoder's
    layer norms, and every convolution's weight (weight-normed `weight_v` or plain) as [C_out|C_in, K, ...],
    i.e. PyTorch's with the last two axes swapped. Quantized layers are Linear/Embedding, same names both ways."""
    out = {}
    for key, value in weights.items():
        module, _, name = key.rpartition(".")
        if name in MLX_AUDIO_LSTM:
            key = f"{module}.{MLX_AUDIO_LSTM[name]}"
        elif re.match(r"text_encoder\.cnn\.\d+\.1$", module):
            key = f"{module}.{'gamma' if name == 'weight' else 'beta'}"
        elif name == "weight_v" or (name == "weight" and PLAIN_CONVS.search(module)):
            value = value.swapaxes(1, 2)
        out[key] = value
    return out
