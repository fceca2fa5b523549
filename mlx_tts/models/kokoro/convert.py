"""Kokoro checkpoints -> an MLX-layout model folder, done once.

Accepted sources, told apart by their files and config (never by weight shapes):
- hexgrad's `kokoro-v1_0.pth`: five PyTorch state dicts (`bert`, `bert_encoder`, `predictor`, `text_encoder`,
  `decoder`) whose keys carry a `module.` prefix;
- flat safetensors (`prince-canuma/Kokoro-82M`, `mlx-community/Kokoro-82M-bf16`): PyTorch layout;
- the same with `"quantization"` in config.json (`mlx-community/Kokoro-82M-{4,6,8}bit`): MLX-Audio's layout;
- kokoro-onnx exports (`convert_onnx`).
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...checkpoint import load_safetensors
from ...utils import save_model
from .kokoro import Model
from .voices import VOICE_SUFFIXES, read_voices, save_voice


def is_config(config: dict) -> bool:
    """Kokoro configs have no `model_type`: they are recognised by their iSTFTNet and PL-BERT sections."""
    if config.get("model_type") is not None:
        return config["model_type"] == "kokoro"
    return all(key in config for key in ("istftnet", "plbert", "vocab", "style_dim"))


def _flatten_pth(checkpoint: dict, source) -> dict:
    weights = {}
    for component, state in checkpoint.items():
        if not isinstance(state, dict):
            raise ValueError(f"{source}: entry {component!r} is not a state dict")
        for key, value in state.items():
            key = key[len("module.") :] if key.startswith("module.") else key
            weights[f"{component}.{key}"] = value
    return weights


def read_source_weights(src: Path, config: dict) -> tuple[dict, str]:
    """The checkpoint's weights and their layout: "torch" or "mlx_audio"."""
    pth = sorted(src.glob("*.pth"))
    safetensors = sorted(src.glob("*.safetensors"))
    if pth:
        from ...torch_io import load_torch_file

        return {k: mx.array(np.asarray(v)) for k, v in _flatten_pth(load_torch_file(pth[0]), pth[0]).items()}, "torch"
    if safetensors:
        return load_safetensors(safetensors), ("mlx_audio" if "quantization" in config else "torch")
    raise FileNotFoundError(f"{src}: no Kokoro weights (*.pth or *.safetensors)")


def _voice_files(src: Path) -> list:
    candidates = list((src / "voices").glob("*")) if (src / "voices").is_dir() else []
    candidates += [p for p in src.glob("voices*") if p.is_file()]
    return sorted(p for p in candidates if p.suffix in VOICE_SUFFIXES)


def write_folder(dst: Path, weights: dict, voices: dict, config: dict):
    """Save an MLX-layout Kokoro folder: config.json, model.safetensors, voices/<name>.safetensors."""
    dst = Path(dst)
    (dst / "voices").mkdir(parents=True, exist_ok=True)
    for name, pack in voices.items():
        save_voice(dst / "voices" / f"{name}.safetensors", pack)
    save_model(dst, weights, {**config, "model_type": "kokoro", "sample_rate": Model.sample_rate})


def convert(src, dst):
    src = Path(src)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    weights, layout = read_source_weights(src, config)
    weights = Model.sanitize_mlx_audio(weights) if layout == "mlx_audio" else Model.sanitize(weights)
    voices = {}
    for path in _voice_files(src):
        voices.update(read_voices(path))
    write_folder(dst, weights, voices, config)


def convert_onnx(onnx_path, voices, dst, config: dict):
    """A kokoro-onnx export (float, fp16 or int8, dequantized) -> MLX folder. `voices` is a voices file
    (`voices-v1.0.bin`, a folder of voice files) or a dict of arrays."""
    from .onnx_import import state_dict_from_onnx

    if not isinstance(voices, dict):
        path = Path(voices)
        files = sorted(p for p in path.iterdir() if p.suffix in VOICE_SUFFIXES) if path.is_dir() else [path]
        voices = {name: pack for f in files for name, pack in read_voices(f).items()}
    torch_layout = {k: mx.array(v) for k, v in state_dict_from_onnx(onnx_path).items()}
    write_folder(dst, Model.sanitize(torch_layout), voices, config)
