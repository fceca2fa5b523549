"""ALBERT (PL-BERT in Kokoro): small embeddings projected to the hidden size, then one shared transformer layer
applied `num_hidden_layers` times.

Kokoro always feeds one unpadded sequence, so there is no attention mask and the token types are all zero.
"""

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ...activations import attention, gelu_tanh
from ...layers import expand_once, linear  # quantized layers over many tokens run as float GEMMs on the CPU

# Hugging Face's names for the activations ALBERT checkpoints use; "gelu_new" is the tanh approximation.
ACTIVATIONS = {"gelu_new": gelu_tanh, "gelu": nn.gelu}


@dataclass
class AlbertArgs:
    vocab_size: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    num_hidden_layers: int
    embedding_size: int = 128
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu_new"

    @classmethod
    def from_dict(cls, plbert: dict, vocab_size: int) -> "AlbertArgs":
        """`plbert` is the `plbert` section of Kokoro's config.json (Hugging Face AlbertConfig fields)."""
        for key in ("num_hidden_groups", "inner_group_num"):
            if plbert.get(key, 1) != 1:
                raise ValueError(f"plbert.{key} = {plbert[key]}: only one shared ALBERT layer is supported")
        if plbert.get("hidden_act", "gelu_new") not in ACTIVATIONS:
            raise ValueError(f"plbert.hidden_act = {plbert['hidden_act']!r}: supported are {sorted(ACTIVATIONS)}")
        required = (
            "hidden_size",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "num_hidden_layers",
        )
        missing = [key for key in required if key not in plbert]
        if missing:
            raise ValueError(f"config.json: the plbert section is missing {', '.join(missing)}")
        fields = set(cls.__dataclass_fields__) - {"vocab_size"}
        return cls(vocab_size=vocab_size, **{k: v for k, v in plbert.items() if k in fields})


class AlbertEmbeddings(nn.Module):
    def __init__(self, args: AlbertArgs):
        super().__init__()
        self.word_embeddings = nn.Embedding(args.vocab_size, args.embedding_size)
        self.position_embeddings = nn.Embedding(args.max_position_embeddings, args.embedding_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.embedding_size)
        self.LayerNorm = nn.LayerNorm(args.embedding_size, eps=args.layer_norm_eps)

    def __call__(self, input_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1])
        token_type = self.token_type_embeddings(mx.zeros((1,), dtype=mx.int32))
        x = self.word_embeddings(input_ids) + token_type + self.position_embeddings(positions)
        return self.LayerNorm(x)


class AlbertAttention(nn.Module):
    def __init__(self, args: AlbertArgs):
        super().__init__()
        self.num_heads = args.num_attention_heads
        self.scale = 1 / math.sqrt(args.hidden_size // args.num_attention_heads)
        self.query = nn.Linear(args.hidden_size, args.hidden_size)
        self.key = nn.Linear(args.hidden_size, args.hidden_size)
        self.value = nn.Linear(args.hidden_size, args.hidden_size)
        self.dense = nn.Linear(args.hidden_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        B, L, _ = x.shape

        def heads(y):
            return y.reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(linear(self.query, x)), heads(linear(self.key, x)), heads(linear(self.value, x))
        out = attention(q, k, v, self.scale)
        out = out.transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.LayerNorm(x + linear(self.dense, out))


class AlbertLayer(nn.Module):
    def __init__(self, args: AlbertArgs):
        super().__init__()
        self.attention = AlbertAttention(args)
        self.ffn = nn.Linear(args.hidden_size, args.intermediate_size)
        self.ffn_output = nn.Linear(args.intermediate_size, args.hidden_size)
        self.full_layer_layer_norm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)
        self.activation = ACTIVATIONS[args.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        x = self.attention(x)
        return self.full_layer_layer_norm(x + linear(self.ffn_output, self.activation(linear(self.ffn, x))))


class AlbertEncoder(nn.Module):
    def __init__(self, args: AlbertArgs):
        super().__init__()
        self.num_hidden_layers = args.num_hidden_layers
        self.embedding_hidden_mapping_in = nn.Linear(args.embedding_size, args.hidden_size)
        self.layer = AlbertLayer(args)

    def __call__(self, x: mx.array) -> mx.array:
        x = linear(self.embedding_hidden_mapping_in, x)
        with expand_once():  # the shared layer's low-precision weights expanded once, not once per application
            for _ in range(self.num_hidden_layers):
                x = self.layer(x)
        return x


class Albert(nn.Module):
    """input_ids [1, N] -> last hidden state [1, N, hidden_size]."""

    def __init__(self, args: AlbertArgs):
        super().__init__()
        self.embeddings = AlbertEmbeddings(args)
        self.encoder = AlbertEncoder(args)

    def __call__(self, input_ids: mx.array) -> mx.array:
        x = self.embeddings(input_ids)
        if mx.default_device() == mx.cpu:  # a half-precision model's layer runs in float32: MLX's CPU ops are
            x = x.astype(mx.float32)  # slow in bfloat16, and its weights are widened for the GEMMs anyway
        return self.encoder(x)
