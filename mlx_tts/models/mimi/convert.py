"""Mimi checkpoints -> an MLX-layout Mimi folder (config.json, model.safetensors), the folder `load_model`
loads; the weights go through `Model.sanitize` (see `layouts`)."""

import json
from pathlib import Path

from ...checkpoint import load_safetensors, save_model
from .model import Model, ModelArgs

KYUTAI_CHECKPOINT = "tokenizer-e351c8d8-checkpoint125.safetensors"


def is_config(config: dict) -> bool:
    return config.get("model_type") == "mimi"


def read_checkpoint(path) -> tuple:
    """(config dict, weights) from a Mimi checkpoint file or a folder holding one (and maybe config.json)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        config_path = path / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    else:
        files, config = [path], {}
    if not files:
        raise FileNotFoundError(f"no Mimi checkpoint (*.safetensors) in {path}")
    return config, load_safetensors(files)


def convert(src_dir, dst_dir):
    """Write an MLX Mimi folder (config.json, model.safetensors) from any supported checkpoint."""
    config, weights = read_checkpoint(src_dir)
    args = ModelArgs.from_dict(config)
    converted = Model(args).sanitize(weights)  # lazy: the model's own arrays are never computed
    out_config = {**config, **args.to_dict(), "model_type": "mimi", "sample_rate": args.sampling_rate}
    return save_model(dst_dir, converted, out_config)
