"""The Llama-3 transformer stack used twice by CSM (backbone and depth decoder), with KV caches.

Inputs are embeddings (CSM builds its own), outputs are the final-normed hidden states. RoPE is rotate-half
with Llama-3.1 frequency scaling; checkpoints with interleaved-pair RoPE are permuted at conversion.
"""

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ...layers import linear


@dataclass
class LlamaArgs:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    head_dim: int = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict = None  # {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", ...}
    max_position_embeddings: int = 2048

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads


def rope_periods(args: LlamaArgs) -> mx.array:
    """1 / inverse frequency of each rotated pair (what `mx.fast.rope` takes as `freqs`), with the
    Llama-3.1 scaling: long wavelengths slowed down by `factor`, short ones kept, a smooth blend between."""
    dims = args.head_dim
    inv_freq = 1.0 / (np.float32(args.rope_theta) ** (np.arange(0, dims, 2, dtype=np.float32) / np.float32(dims)))
    scaling = args.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        context = scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inv_freq
        smooth = (context / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(
            wavelength < context / high, inv_freq, np.where(wavelength > context / low, inv_freq / factor, blended)
        )
    elif rope_type != "default":
        raise ValueError(f"CSM config: unsupported RoPE scaling {rope_type!r} (supported: llama3, default)")
    return mx.array((1.0 / inv_freq).astype(np.float32))


class KVCache:
    """Keys and values of the positions seen so far, in buffers grown `step` positions at a time."""

    def __init__(self, step: int = 256):
        self.step = step
        self.keys = None
        self.values = None
        self.offset = 0

    def update_and_fetch(self, keys, values):
        start, end = self.offset, self.offset + keys.shape[2]
        if self.keys is None or end > self.keys.shape[2]:
            B, H, _, D = keys.shape
            size = math.ceil(end / self.step) * self.step
            grown = [mx.zeros((B, H, size, D), keys.dtype) for _ in range(2)]
            if self.keys is not None:
                grown[0][:, :, :start] = self.keys[:, :, :start]
                grown[1][:, :, :start] = self.values[:, :, :start]
            self.keys, self.values = grown
        self.keys[:, :, start:end] = keys
        self.values[:, :, start:end] = values
        self.offset = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reset(self):
        """Forget the positions but keep the buffers."""
        self.offset = 0

    def fork(self) -> "KVCache":
        """A cache that continues from this one's positions; updating it leaves this one unchanged."""
        other = KVCache(self.step)
        if self.keys is not None:  # a view of exactly `offset` positions: the fork's first update re-allocates
            other.keys, other.values = self.keys[:, :, : self.offset], self.values[:, :, : self.offset]
        other.offset = self.offset
        return other


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = args.num_attention_heads, args.num_key_value_heads, args.head_dim
        self.scale = self.head_dim**-0.5
        dims = args.hidden_size
        self.q_proj = nn.Linear(dims, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dims, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dims, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, dims, bias=False)
        self._rope_periods = rope_periods(args)

    def __call__(self, x, cache: KVCache):
        B, T, _ = x.shape
        q = linear(self.q_proj, x).reshape(B, T, self.heads, -1).transpose(0, 2, 1, 3)
        k = linear(self.k_proj, x).reshape(B, T, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = linear(self.v_proj, x).reshape(B, T, self.kv_heads, -1).transpose(0, 2, 1, 3)
        rope = dict(traditional=False, base=None, scale=1.0, offset=cache.offset, freqs=self._rope_periods)
        q = mx.fast.rope(q, self.head_dim, **rope)
        k = mx.fast.rope(k, self.head_dim, **rope)
        k, v = cache.update_and_fetch(k, v)
        # "causal" aligns the last query with the last key, which is what a cache continuation needs
        mask = "causal" if T > 1 else None
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return linear(self.o_proj, out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dims, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(dims, hidden, bias=False)
        self.up_proj = nn.Linear(dims, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dims, bias=False)

    def __call__(self, x):
        return linear(self.down_proj, nn.silu(linear(self.gate_proj, x)) * linear(self.up_proj, x))


class TransformerBlock(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, cache):
        x = x + self.self_attn(self.input_layernorm(x), cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, cache: list) -> mx.array:
        """x: [B, T, hidden] embeddings of the positions after those in `cache` -> normed hidden states."""
        for layer, layer_cache in zip(self.layers, cache):
            x = layer(x, layer_cache)
        return self.norm(x)

    def make_cache(self, step: int = 256) -> list:
        return [KVCache(step) for _ in self.layers]
