"""Mimi's split residual vector quantizer: one semantic codebook, then the acoustic ones.

Both halves quantize the same latents, each through its own 1x1 projection into the codebook space; each
acoustic codebook quantizes what the previous ones left over. Codebooks are stored as their centroids
(the checkpoints' `embedding_sum / cluster_usage`, divided once at conversion).
"""

import mlx.core as mx
import mlx.nn as nn

from ...layers import linear


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, num_quantizers, codebook_size, codebook_dim, hidden_size):
        super().__init__()
        self.input_proj = nn.Linear(hidden_size, codebook_dim, bias=False)
        self.output_proj = nn.Linear(codebook_dim, hidden_size, bias=False)
        self.codebooks = mx.zeros((num_quantizers, codebook_size, codebook_dim))

    def encode(self, x: mx.array) -> mx.array:
        """x: [B, T, hidden] -> codes [B, num_quantizers, T]: the nearest centroid, residual by residual."""
        residual = linear(self.input_proj, x)
        codes = []
        for centroids in self.codebooks:
            distances = (
                (residual**2).sum(-1, keepdims=True)
                - 2 * residual @ centroids.T
                + (centroids**2).sum(-1)
            )
            nearest = mx.argmin(distances, axis=-1)
            residual = residual - centroids[nearest]
            codes.append(nearest)
        return mx.stack(codes, axis=1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes: [B, n, T] (n <= num_quantizers) -> [B, T, hidden]."""
        levels = mx.arange(codes.shape[1])[None, :, None]
        return linear(self.output_proj, self.codebooks[levels, codes].sum(axis=1))


class SplitResidualVectorQuantizer(nn.Module):
    def __init__(self, args):
        super().__init__()
        sizes = (args.codebook_size, args.codebook_dim, args.hidden_size)
        self.num_semantic = args.num_semantic_quantizers
        self.semantic = ResidualVectorQuantizer(args.num_semantic_quantizers, *sizes)
        self.acoustic = ResidualVectorQuantizer(args.num_quantizers - args.num_semantic_quantizers, *sizes)

    def encode(self, x: mx.array) -> mx.array:
        return mx.concatenate([self.semantic.encode(x), self.acoustic.encode(x)], axis=1)

    def decode(self, codes: mx.array) -> mx.array:
        latents = self.semantic.decode(codes[:, : self.num_semantic])
        if codes.shape[1] > self.num_semantic:
            latents = latents + self.acoustic.decode(codes[:, self.num_semantic :])
        return latents
