"""Folders as MLX-Audio (0.6.2) writes them, made from our models: the inverse of our converters' mapping.

Facts read from MLX-Audio's code (its Kokoro and Sesame models, its `convert`):
- Kokoro keeps PyTorch's module names (`bert.encoder.albert_layer_groups.0.albert_layers.0.`,
  `predictor.duration_proj.linear_layer.`, `decoder.asr_res.0.`, an unused `bert.pooler`); each LSTM holds
  `Wx_forward` [4H, in], `Wh_forward` [4H, H], `bias_ih_forward`, `bias_hh_forward` and the same `_backward`;
  weight-normed convolutions hold `weight_g` [n, 1, 1] and `weight_v` in MLX's [out, kernel, in] (the
  transposed ones [in, kernel, out], the depthwise `pool` [channels, kernel, 1]), normalized over all axes but
  the first; plain convolutions (`F0_proj`, `N_proj`, `noise_convs`) hold an MLX `weight`; the snake `alpha`s
  are [1, channels, 1]; the text encoder's norms are `weight`/`bias`.
- CSM lives under `model.` with our module names (`self_attn`, `gate_proj`, `input_layernorm`, ...), q/k rows
  in interleaved-pair RoPE order, `audio_head` a plain array; the codec is not part of the checkpoint.
- Its save writes `model.safetensors` (and an index) of the model's parameters and `config.json` with
  `model_type`; its quantization (`convert -q`) quantizes each module that has `to_quantized` (MLX's Linear and
  Embedding: none of Kokoro's convolutions or LSTMs) whose weight rows are a multiple of 64 (and of the group
  size), and writes `"quantization"` (and a copy, `"quantization_config"`): group size, bits, mode.
"""

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_tts.models.kokoro.modules import BiLSTM, Conv1d, ConvTranspose1d

KOKORO_RENAMES = (
    ("bert.encoder.layer.", "bert.encoder.albert_layer_groups.0.albert_layers.0."),
    ("predictor.duration_proj.", "predictor.duration_proj.linear_layer."),
    ("decoder.asr_res.", "decoder.asr_res.0."),
)
PLAIN_CONVS = re.compile(r"(^|\.)(F0_proj|N_proj|noise_convs\.\d+)$")


def _mlx_audio_path(path: str) -> str:
    """A parameter key or module path, ours -> MLX-Audio's."""
    for ours, theirs in KOKORO_RENAMES:
        if (path + ".").startswith(ours):
            return (theirs + (path + ".")[len(ours) :])[:-1]
    return path


def mlx_audio_kokoro_weights(model) -> dict:
    """Our Kokoro -> MLX-Audio's float32 parameter names and shapes."""
    ours = dict(tree_flatten(model.parameters()))
    out = {}
    for path, module in model.named_modules():
        if isinstance(module, BiLSTM):
            hidden = module.weight_hh.shape[-1]
            for i, direction in enumerate(("forward", "backward")):
                rows = slice(4 * hidden * i, 4 * hidden * (i + 1))
                out[f"{path}.Wx_{direction}"] = module.weight_ih[rows]
                out[f"{path}.Wh_{direction}"] = module.weight_hh[i]
                out[f"{path}.bias_ih_{direction}"] = module.bias[rows]  # our bias is the two summed
                out[f"{path}.bias_hh_{direction}"] = mx.zeros(4 * hidden)
        elif isinstance(module, (Conv1d, ConvTranspose1d)):
            name = _mlx_audio_path(path)
            weight = module.weight
            if PLAIN_CONVS.search(path):
                out[f"{name}.weight"] = weight
            else:
                if isinstance(module, ConvTranspose1d) and module.groups == 1:
                    weight = weight.transpose(2, 1, 0)  # [out, kernel, in] -> [in, kernel, out]
                out[f"{name}.weight_v"] = weight
                out[f"{name}.weight_g"] = mx.sqrt((weight * weight).sum(axis=(1, 2), keepdims=True))
            if "bias" in module:
                out[f"{name}.bias"] = module.bias
    covered = {k for path, m in model.named_modules() if isinstance(m, (BiLSTM, Conv1d, ConvTranspose1d))
               for k in ours if k.startswith(path + ".")}
    for key, value in ours.items():
        if key in covered:
            continue
        if ".alpha" in key:
            value = value.reshape(1, -1, 1)
        out[_mlx_audio_path(key)] = value
    hidden = model.args.plbert["hidden_size"]
    out["bert.pooler.weight"] = mx.zeros((hidden, hidden))
    out["bert.pooler.bias"] = mx.zeros(hidden)
    return out


def mlx_audio_quantize(weights: dict, bits: int, group_size: int = 64, layer_bits: dict = None):
    """MLX-Audio's `convert -q`: Linear and Embedding weights (the 2-D `.weight`s of its Kokoro and CSM) whose
    rows are a multiple of 64 and of the group size; `layer_bits` (module -> bits) as its mixed recipes, which
    record each such layer in the block. -> (weights, its quantization block)."""
    out = dict(weights)
    block = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for key, value in weights.items():
        whole_groups = value.ndim == 2 and value.shape[-1] % 64 == 0 and value.shape[-1] % group_size == 0
        if key.endswith(".weight") and whole_groups:
            module = key[: -len(".weight")]
            layer = (layer_bits or {}).get(module, bits)
            if layer != bits:
                block[module] = {"group_size": group_size, "bits": layer}
            out[key], out[f"{module}.scales"], out[f"{module}.biases"] = mx.quantize(value, group_size, layer)
    return out, block


def dequantized(weights: dict, quantization: dict) -> dict:
    """The float weights a quantized MLX-Audio checkpoint stands for (same names, no scales)."""
    out = {}
    for key, value in weights.items():
        module, _, name = key.rpartition(".")
        if name in ("scales", "biases"):
            continue
        if name == "weight" and f"{module}.scales" in weights:
            layer = quantization.get(module) or quantization  # a per-layer entry, or the block's own
            value = mx.dequantize(value, weights[f"{module}.scales"], weights[f"{module}.biases"],
                                  layer["group_size"], layer["bits"])
        out[key] = value
    return out


def write_mlx_audio_folder(folder, weights: dict, config: dict, quantization: dict = None, side_files=None):
    """config.json, model.safetensors (+ its index) as MLX-Audio's save writes them; `side_files` (e.g. a voices
    folder) are copied in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in config.items() if k not in ("layout", "quantization", "sample_rate")}
    if quantization:
        config.update(quantization=quantization, quantization_config=quantization)
    (folder / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=4, ensure_ascii=False))
    mx.eval(weights)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
             "weight_map": {k: "model.safetensors" for k in sorted(weights)}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))
    for item in side_files or ():
        item = Path(item)
        if item.is_dir():
            shutil.copytree(item, folder / item.name)
        else:
            shutil.copy2(item, folder / item.name)
    return folder


def interleave_rows(weight: mx.array, heads: int) -> mx.array:
    """rotate-half q/k rows -> interleaved-pair rows (rows only: works on packed weights and scales too)."""
    out_dims, width = weight.shape
    return weight.reshape(heads, 2, out_dims // heads // 2, width).swapaxes(1, 2).reshape(out_dims, width)


def mlx_audio_csm_weights(model) -> dict:
    """Our CSM (codec left out) -> MLX-Audio's names and q/k row order."""
    stacks = {"backbone": model.args.backbone, "decoder": model.args.decoder}
    out = {}
    for key, value in tree_flatten(model.parameters()):
        if key.startswith("codec."):
            continue
        parts = key.split(".")
        if parts[0] in stacks and parts[-2] in ("q_proj", "k_proj"):
            stack = stacks[parts[0]]
            heads = stack.num_attention_heads if parts[-2] == "q_proj" else stack.num_key_value_heads
            value = interleave_rows(value, heads)
        out[f"model.{key}"] = value
    return out


def as_dtype(weights: dict, dtype) -> dict:
    return {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
