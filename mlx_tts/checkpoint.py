"""Helpers the loaders and converters share: reading safetensors, checking weights against a model, renaming
keys, PyTorch -> MLX conv layouts."""

import re

import mlx.core as mx
from mlx.utils import tree_flatten

from .errors import MlxTtsError


class ModelLoadError(MlxTtsError, ValueError):
    """A model can't be found, converted or loaded; the message names the repo, file or key."""


def load_safetensors(files) -> dict:
    """All tensors of `files`, merged; an unreadable file is named in the error."""
    weights = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:
            raise ModelLoadError(
                f"{file}: can't read safetensors ({e}); delete its folder and convert or download it again"
            ) from None
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


def check_weights(model, weights: dict, source):
    """Raise an error that names the keys, when the checkpoint and the model disagree."""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    problems = []
    if missing:
        layers = sorted({k.rsplit(".", 1)[0] for k in missing if k.endswith((".scales", ".biases"))})
        if layers:
            problems.append(f"missing quantization scales/biases for layers: {', '.join(layers[:10])}")
        problems.append(f"missing keys: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if extra:
        problems.append(f"unexpected keys: {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
    for key in sorted(set(expected) & set(weights)):
        if expected[key].shape != weights[key].shape:
            problems.append(f"{key}: shape {tuple(weights[key].shape)} where the model has {tuple(expected[key].shape)}")
    if problems:
        raise ModelLoadError(f"{source}: checkpoint does not match the model: " + "; ".join(problems))
