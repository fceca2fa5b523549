"""Sesame's Conversational Speech Model: a Llama backbone over frames of text and Mimi codes, a small depth
decoder for the codebooks of each frame, and the Mimi codec itself (`codec`).

A position is a frame of 33 columns (32 codes, then one text token) with a mask; its embedding is the sum of
the embeddings of its unmasked columns. Each generated frame is one backbone step, the first code from the
backbone's last hidden state, then 31 depth-decoder steps for the other codes.
"""

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ...layers import linear
from .. import mimi
from . import layouts
from .llama import Llama, LlamaArgs

LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# the torchtune flavors named by sesame's original config.json
FLAVORS = {
    "llama-1B": LlamaArgs(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192, head_dim=64, rope_scaling=LLAMA31_ROPE,
    ),
    "llama-100M": LlamaArgs(
        hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
        intermediate_size=8192, head_dim=128, rope_scaling=LLAMA31_ROPE,
    ),
}

# transformers' CsmConfig / CsmDepthDecoderConfig defaults for the fields a config may leave out
BACKBONE_DEFAULTS = dict(
    hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    intermediate_size=8192, max_position_embeddings=2048,
)
DECODER_DEFAULTS = dict(
    hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
    intermediate_size=8192, max_position_embeddings=33,
)


def _llama_args(config: dict, defaults: dict, where: str) -> LlamaArgs:
    """LlamaArgs from a transformers (4.x or 5.x) config section."""
    for key, supported in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        if config.get(key, supported) != supported:
            raise ValueError(f"CSM config: {where}{key}={config[key]!r} is not supported (only {supported!r})")
    values = {**defaults, **{k: config[k] for k in defaults if config.get(k) is not None}}
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.pop("rope_theta", None) or config.get("rope_theta") or 500000.0
    return LlamaArgs(
        **values,
        head_dim=config.get("head_dim"),
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=theta,
        rope_scaling=rope or None,
    )


@dataclass
class ModelArgs:
    backbone: LlamaArgs = field(default_factory=lambda: FLAVORS["llama-1B"])
    decoder: LlamaArgs = field(default_factory=lambda: FLAVORS["llama-100M"])
    text_vocab_size: int = 128256
    audio_vocab_size: int = 2051
    audio_num_codebooks: int = 32
    codec: mimi.ModelArgs = field(default_factory=mimi.ModelArgs)

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        """From sesame's original config (flavor names), transformers' `CsmConfig`, or a converted one."""
        codec = mimi.ModelArgs.from_dict(config.get("codec_config") or {})
        if "backbone_flavor" in config:
            for key in ("backbone_flavor", "decoder_flavor"):
                if config.get(key) not in FLAVORS:
                    raise ValueError(f"CSM config: unknown {key} {config.get(key)!r}; known: {', '.join(FLAVORS)}")
            args = cls(
                backbone=FLAVORS[config["backbone_flavor"]],
                decoder=FLAVORS[config["decoder_flavor"]],
                text_vocab_size=config.get("text_vocab_size", 128256),
                audio_vocab_size=config.get("audio_vocab_size", 2051),
                audio_num_codebooks=config.get("audio_num_codebooks", 32),
                codec=codec,
            )
        elif "depth_decoder_config" in config:
            args = cls(
                backbone=_llama_args(config, BACKBONE_DEFAULTS, ""),
                decoder=_llama_args(config["depth_decoder_config"] or {}, DECODER_DEFAULTS, "depth_decoder_config."),
                text_vocab_size=config.get("text_vocab_size", 128256),
                audio_vocab_size=config.get("vocab_size", 2051),
                audio_num_codebooks=config.get("num_codebooks", 32),
                codec=codec,
            )
        else:
            raise ValueError("not a CSM config: it has neither `backbone_flavor` nor `depth_decoder_config`")
        if args.audio_num_codebooks != codec.num_quantizers:
            raise ValueError(
                f"CSM config: {args.audio_num_codebooks} codebooks, but the codec has {codec.num_quantizers}"
            )
        return args

    @property
    def max_seq_len(self) -> int:
        return self.backbone.max_position_embeddings


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        backbone_dim, decoder_dim = args.backbone.hidden_size, args.decoder.hidden_size
        vocab, codebooks = args.audio_vocab_size, args.audio_num_codebooks
        self.backbone = Llama(args.backbone)
        self.decoder = Llama(args.decoder)
        self.text_embeddings = nn.Embedding(args.text_vocab_size, backbone_dim)
        self.audio_embeddings = nn.Embedding(vocab * codebooks, backbone_dim)
        self.projection = nn.Linear(backbone_dim, decoder_dim, bias=False)
        self.codebook0_head = nn.Linear(backbone_dim, vocab, bias=False)
        self.audio_head = mx.zeros((codebooks - 1, decoder_dim, vocab))
        self.codec = mimi.Model(args.codec)
        # ids past the codec's codebook (padding and specials) are never sampled: the codec can't decode them
        self._invalid_codes = mx.where(mx.arange(vocab) < args.codec.codebook_size, 0.0, -mx.inf)
        self._codebook_offsets = mx.arange(codebooks) * vocab
        # computed now: a lazy array can only be evaluated on the thread that made it (MLX streams are
        # per thread), and servers load on one thread and generate on another
        mx.eval(self._invalid_codes, self._codebook_offsets)

    @property
    def sample_rate(self) -> int:
        return self.args.codec.sampling_rate

    def sanitize(self, weights: dict) -> dict:
        """sesame's, MLX-Audio's or transformers' CSM weights -> this model's layout (see `layouts`). A
        transformers checkpoint's codec (under `codec_model.`) comes back under `codec.`, through the codec's
        own `sanitize`."""
        if layouts.detect_layout(weights) == "original":
            return layouts.from_original(weights, self.args)
        csm, codec = layouts.from_transformers(weights)
        return {**csm, **{f"codec.{k}": v for k, v in (self.codec.sanitize(codec) if codec else {}).items()}}

    def embed_frames(self, tokens: mx.array, mask: mx.array) -> mx.array:
        """tokens, mask: [B, S, codebooks + 1] -> [B, S, hidden], the sum of the unmasked columns' embeddings."""
        audio = self.audio_embeddings(tokens[..., :-1] + self._codebook_offsets)
        audio = (audio * mask[..., :-1, None]).sum(axis=2)
        return audio + self.text_embeddings(tokens[..., -1]) * mask[..., -1:]

    def embed_codes(self, codes: mx.array) -> mx.array:
        """A generated frame of codes [B, codebooks] -> its position's embedding [B, 1, hidden]."""
        return self.audio_embeddings(codes + self._codebook_offsets).sum(axis=1, keepdims=True)

    def check_fits(self, prompt_len: int, max_frames: int):
        """Raise before any work if the prompt and the frames to generate exceed the backbone's positions."""
        if prompt_len + max_frames > self.args.max_seq_len:
            raise ValueError(
                f"CSM prompt too long: {prompt_len} positions of context and text plus up to {max_frames} frames "
                f"to generate exceed the model's {self.args.max_seq_len} positions; use a shorter reference or "
                f"context, shorter text, or a smaller max_audio_length_ms"
            )

    def sample_codes(self, logits: mx.array, sampler) -> mx.array:
        return sampler(logits.astype(mx.float32) + self._invalid_codes).astype(mx.int32)

    def decode_frame(self, hidden: mx.array, sampler, cache: list) -> mx.array:
        """The codes of one frame [B, codebooks], from the backbone's last hidden state [B, hidden].

        `cache` is a depth-decoder cache, reset here (each frame starts a fresh decoder sequence). The whole
        frame is built lazily: one evaluation per frame."""
        for layer_cache in cache:
            layer_cache.reset()
        code = self.sample_codes(linear(self.codebook0_head, hidden[:, None])[:, 0], sampler)
        codes = [code]
        x = mx.stack([hidden, self.audio_embeddings(code)], axis=1)
        for i in range(1, self.args.audio_num_codebooks):
            out = self.decoder(linear(self.projection, x), cache)[:, -1]
            # As a batched product with a one-matrix slice: a plain `out @ audio_head[i - 1]` copies the 8 MB
            # matrix first on the CPU (3 ms a step once MLX's small CPU buffer cache is full).
            logits = (out[:, None] @ self.audio_head[i - 1 : i])[:, 0]
            code = self.sample_codes(logits, sampler)
            codes.append(code)
            x = self.audio_embeddings(code + i * self.args.audio_vocab_size)[:, None]
        return mx.stack(codes, axis=1)

    def cache_prompt(self, tokens: mx.array, mask: mx.array) -> list:
        """A backbone cache holding these prompt positions (tokens, mask: [B, S, codebooks + 1]), computed
        now: a context shared by several `generate` calls is run through the backbone once."""
        self.check_fits(tokens.shape[1], 0)
        cache = self.backbone.make_cache()
        self.backbone(self.embed_frames(tokens, mask), cache)
        mx.eval([(c.keys, c.values) for c in cache])
        return cache

    def generate(self, tokens: mx.array, mask: mx.array, max_frames: int, sampler, context: list = None):
        """Frames of codes [B, codebooks] after the prompt (tokens, mask: [B, S, codebooks + 1]), one at a
        time, until the model emits an all-zero (end of audio) frame or `max_frames` frames are out.
        `context` (from `cache_prompt`, left unchanged) holds positions that come before `tokens`.
        A prompt that can't fit is refused here, before any work."""
        offset = context[0].offset if context else 0
        self.check_fits(offset + tokens.shape[1], max_frames)
        cache = [c.fork() for c in context] if context else self.backbone.make_cache()
        return self._frames(tokens, mask, max_frames, sampler, cache)

    def _frames(self, tokens, mask, max_frames, sampler, cache):
        decoder_cache = self.decoder.make_cache(step=self.args.audio_num_codebooks + 1)
        hidden = self.backbone(self.embed_frames(tokens, mask), cache)[:, -1]
        for _ in range(max_frames):
            frame = self.decode_frame(hidden, sampler, decoder_cache)
            mx.eval(frame)
            if not frame.any().item():
                return
            yield frame
            # lazy: after the last frame this graph is never evaluated, so it costs nothing
            hidden = self.backbone(self.embed_codes(frame), cache)[:, -1]
