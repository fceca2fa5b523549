"""Mimi's causal transformer: pre-LayerNorm layers with layer scale, rotate-half RoPE and a sliding window.

Each position attends to itself and the `sliding_window - 1` positions before it. With a `WindowCache` per
layer the transformer runs chunk by chunk and gives the same result as on the whole sequence.
"""

import mlx.core as mx
import mlx.nn as nn

from ...layers import linear


class WindowCache:
    """Keys and values of the last positions one layer can still attend to."""

    def __init__(self, window: int):
        self.window = window
        self.keys = None
        self.values = None
        self.offset = 0  # position of the next query

    def update_and_fetch(self, keys, values):
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        keep = max(keys.shape[2] - (self.window - 1), 0)
        self.keys, self.values = keys[:, :, keep:], values[:, :, keep:]
        return keys, values


def window_mask(offset: int, queries: int, keys: int, window: int) -> mx.array:
    """Boolean [queries, keys] mask: query at offset+i sees key positions in (q - window, q]."""
    q = mx.arange(offset, offset + queries)[:, None]
    k = mx.arange(offset + queries - keys, offset + queries)[None]
    distance = q - k
    return (distance >= 0) & (distance < window)


class Attention(nn.Module):
    def __init__(self, args):
        super().__init__()
        dims, head_dim = args.hidden_size, args.head_dim
        heads, kv_heads = args.num_attention_heads, args.num_key_value_heads
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.rope_theta = args.rope_theta
        self.q_proj = nn.Linear(dims, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dims, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dims, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, dims, bias=False)

    def __call__(self, x, mask, offset, cache=None):
        B, T, _ = x.shape
        q = linear(self.q_proj, x).reshape(B, T, self.heads, -1).transpose(0, 2, 1, 3)
        k = linear(self.k_proj, x).reshape(B, T, self.kv_heads, -1).transpose(0, 2, 1, 3)
        v = linear(self.v_proj, x).reshape(B, T, self.kv_heads, -1).transpose(0, 2, 1, 3)
        rope = dict(traditional=False, base=self.rope_theta, scale=1.0, offset=offset)
        q = mx.fast.rope(q, self.head_dim, **rope)
        k = mx.fast.rope(k, self.head_dim, **rope)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return linear(self.o_proj, out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dims, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dims, bias=False)

    def __call__(self, x):
        return linear(self.fc2, nn.gelu(linear(self.fc1, x)))


class TransformerLayer(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.LayerNorm(args.hidden_size, eps=args.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(args.hidden_size, eps=args.norm_eps)
        self.attn_scale = mx.full((args.hidden_size,), args.layer_scale_initial_scale)
        self.mlp_scale = mx.full((args.hidden_size,), args.layer_scale_initial_scale)

    def __call__(self, x, mask, offset, cache=None):
        x = x + self.attn_scale * self.self_attn(self.input_layernorm(x), mask, offset, cache)
        return x + self.mlp_scale * self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.window = args.sliding_window
        self.layers = [TransformerLayer(args) for _ in range(args.num_hidden_layers)]

    def __call__(self, x, cache=None):
        """x: [B, T, hidden]; `cache` (from `make_cache`) continues a previous call."""
        offset = cache[0].offset if cache else 0
        keys = x.shape[1] + min(offset, self.window - 1)  # the cached positions still in the window
        mask = window_mask(offset, x.shape[1], keys, self.window)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, offset, cache[i] if cache else None)
        if cache:
            for layer_cache in cache:
                layer_cache.offset += x.shape[1]
        return x

    def make_cache(self):
        return [WindowCache(self.window) for _ in self.layers]
