"""Kokoro checkpoints -> an MLX-layout model folder, done once.

Accepted sources:
- hexgrad's `kokoro-v1_0.pth`: five PyTorch state dicts (`bert`, `bert_encoder`, `predictor`, `text_encoder`,
  `decoder`) whose keys carry a `module.` prefix;
- flat safetensors in PyTorch layout (`prince-canuma/Kokoro-82M`, `mlx-community/Kokoro-82M-bf16`);
- flat safetensors in MLX-Audio's MLX layout, float or quantized (what MLX-Audio's own save and convert write,
  `mlx-community/Kokoro-82M-{4,6,8}bit`);
- kokoro-onnx exports (`convert_onnx`).
Which of the two safetensors layouts a folder holds is read from its weights (`detect_layout`), never from its
config: MLX-Audio writes the same layout with or without a quantization block.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...checkpoint import ModelLoadError, check_weights, load_safetensors, quantize_like_checkpoint, save_model
from ...layers import QuantizableConv
from .kokoro import LSTM_PARTS, MLX_AUDIO_LSTM, PLAIN_CONVS, TEXT_ENCODER_NORM, Model, ModelArgs, _rename
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
        weights = load_safetensors(safetensors)
        return weights, detect_layout(weights, config, src)
    raise FileNotFoundError(f"{src}: no Kokoro weights (*.pth or *.safetensors)")


def _our_path(path: str) -> str:
    """A module path in PyTorch's (and MLX-Audio's) names -> ours (the renames are prefixes of parameter keys)."""
    return _rename(f"{path}.")[:-1]


def _kernel_sizes(config: dict) -> dict:
    """Each convolution's kernel size, by its module path."""
    model = Model(ModelArgs.from_dict(config))  # lazy: only the shapes are read
    return {path: m.weight.shape[1] for path, m in model.named_modules() if isinstance(m, QuantizableConv)}


def detect_layout(weights: dict, config: dict, source) -> str:
    """"torch" or "mlx_audio", from what the weights hold: the LSTMs' names (PyTorch's `weight_ih_l0...`,
    MLX-Audio's `Wx_forward...`), the text encoder's norms (PyTorch's `gamma`/`beta`) and which axis of each
    convolution weight holds its kernel (PyTorch's [out, in, kernel], MLX's [out, kernel, in]; square ones tell
    nothing). Weights that point both ways, or nowhere, are refused."""
    kernels = _kernel_sizes(config)
    evidence = {"torch": [], "mlx_audio": []}
    for key, value in weights.items():
        module, _, name = key.rpartition(".")
        if name in MLX_AUDIO_LSTM:
            evidence["mlx_audio"].append(key)
        elif name.removesuffix("_reverse") in LSTM_PARTS or TEXT_ENCODER_NORM.match(key):
            evidence["torch"].append(key)
        elif name == "weight_v" or (name == "weight" and PLAIN_CONVS.search(module)):
            kernel = kernels.get(_our_path(module))
            if kernel is None or value.ndim != 3 or value.dtype == mx.uint32:
                continue
            if value.shape[1] == kernel != value.shape[2]:
                evidence["mlx_audio"].append(key)
            elif value.shape[2] == kernel != value.shape[1]:
                evidence["torch"].append(key)
    found = [layout for layout, keys in evidence.items() if keys]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(
            f"{source}: can't tell the layout of these Kokoro weights: no LSTM or convolution weights "
            f"({', '.join(sorted(weights)[:5])} ...)"
        )
    raise ModelLoadError(
        f"{source}: ambiguous Kokoro checkpoint, its weights mix two layouts: PyTorch's "
        f"({', '.join(sorted(evidence['torch'])[:3])}) and MLX-Audio's "
        f"({', '.join(sorted(evidence['mlx_audio'])[:3])}); "
        "convert it from one source"
    )


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
    config = {k: v for k, v in config.items() if k != "quantization_config"}  # MLX-Audio's copy of the block
    model = Model(ModelArgs.from_dict(config))  # lazy: only names and shapes are read
    if "quantization" in config:
        quantization = {_our_path(k): v for k, v in config["quantization"].items()}  # per-layer entries
        config["quantization"] = quantize_like_checkpoint(model, quantization, weights)
    check_weights(model, weights, src)  # names and shapes (a quantized layer without its scales is named)
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
