"""Helpers the model converters share: reading safetensors, renaming keys, PyTorch -> MLX conv layouts."""

import re

import mlx.core as mx


def load_safetensors(files) -> dict:
    """All tensors of `files`, merged; an unreadable file is named in the error."""
    weights = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:
            raise ValueError(f"{file}: can't read safetensors ({e})") from None
    return weights


def rename_keys(weights: dict, renames) -> dict:
    """Apply each `(regex, replacement)` of `renames`, in order, to every key."""
    out = {}
    for key, value in weights.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def torch_conv_weight(w: mx.array) -> mx.array:
    """torch Conv1d [C_out, C_in / groups, K] -> MLX [C_out, K, C_in / groups]."""
    return w.swapaxes(1, 2)


def torch_conv_transpose_weight(w: mx.array, groups: int) -> mx.array:
    """torch ConvTranspose1d [C_in, C_out / groups, K] -> MLX [C_out, K, C_in / groups]."""
    c_in, c_out_group, k = w.shape
    w = w.reshape(groups, c_in // groups, c_out_group, k).transpose(0, 2, 3, 1)
    return w.reshape(groups * c_out_group, k, c_in // groups)
