"""Helpers the loaders and the model packages' converters share: reading and writing MLX model folders
(safetensors, config.json), checking weights against a model, quantizing a model as its checkpoint is,
renaming keys, PyTorch -> MLX conv layouts, RoPE row orders.

Nothing here imports `mlx_tts.utils` or a model package: both import this module.
"""

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .errors import ModelLoadError
from .manifest import write_manifest

SIDE_FILES = ("voices", "tokenizer.json", "tokenizer_config.json", "codec")


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


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no config.json: not a model folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None


def quantization_predicate(quantization: dict, weights: dict):
    """Which modules to quantize, as in mlx-lm: per-path overrides in the config win (a dict of
    bits/group_size, or False for full precision), otherwise modules the checkpoint holds quantized: with
    scales, biases or a packed (uint32) weight, so that a layer missing its scales is reported as such."""

    def predicate(path, module):
        if path in quantization:
            return quantization[path]
        weight = weights.get(f"{path}.weight")
        packed = weight is not None and weight.dtype == mx.uint32
        return hasattr(module, "to_quantized") and (
            packed or f"{path}.scales" in weights or f"{path}.biases" in weights
        )

    return predicate


def quantize_like_checkpoint(model: nn.Module, quantization: dict, weights: dict) -> dict:
    """Quantize `model` in place as the checkpoint `weights` are (see `quantization_predicate`); return the
    quantization block in quantize_model's form: the checkpoint's group size, bits (and mode), its per-layer
    entries, and `path: false` for every quantizable layer it holds in full precision (MLX-Audio lists none)."""
    nn.quantize(
        model,
        group_size=quantization["group_size"],
        bits=quantization["bits"],
        mode=quantization.get("mode", "affine"),
        class_predicate=quantization_predicate(quantization, weights),
    )
    full_precision = {path: False for path, module in model.named_modules() if hasattr(module, "to_quantized")}
    return {**quantization, **full_precision}


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


def rope_interleaved_to_half(weight: mx.array, heads: int) -> mx.array:
    """Reorder q/k projection rows from interleaved-pair RoPE (x0, x1 rotate together) to rotate-half
    (x_i rotates with x_{i + d/2}), per head."""
    out_dims, in_dims = weight.shape
    head_dim = out_dims // heads
    return weight.reshape(heads, head_dim // 2, 2, in_dims).swapaxes(1, 2).reshape(out_dims, in_dims)


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
            problems.append(
                f"{key}: shape {tuple(weights[key].shape)} where the model has {tuple(expected[key].shape)}"
            )
    if problems:
        raise ModelLoadError(f"{source}: checkpoint does not match the model: " + "; ".join(problems))


def save_model(path, weights: dict, config: dict, source=None) -> Path:
    """Write a loadable MLX folder: config.json, model.safetensors, and the side files (voices, tokenizer,
    codec) copied from `source` (a loaded model or its folder)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    source_dir = Path(getattr(source, "path", source)) if source is not None else None
    written = ["model.safetensors", "config.json"]
    for name in SIDE_FILES if source_dir else ():
        item = source_dir / name
        if item.is_dir():
            shutil.copytree(item, path / name, dirs_exist_ok=True)
            written += [p.relative_to(path).as_posix() for p in (path / name).rglob("*") if p.is_file()]
        elif item.is_file():
            shutil.copy2(item, path / name)
            written.append(name)
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    config = {**config, "layout": "mlx"}
    (path / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    write_manifest(path, written)
    return path
