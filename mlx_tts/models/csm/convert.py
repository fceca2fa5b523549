"""CSM checkpoints -> one MLX folder: `config.json`, `model.safetensors` (CSM and, under `codec.`, its Mimi
codec) and `tokenizer.json`.

Layouts read:
- sesame's original (`sesame/csm-1b`: `config.json` with flavor names, `model.safetensors` or `ckpt.pt` with
  torchtune names `backbone.layers.0.attn.q_proj.weight`, `mlp.w1`, `sa_norm.scale`, interleaved-pair RoPE);
- MLX-Audio's (`mlx-community/csm-1b`: the same weights under `model.`, renamed `self_attn`, `gate_proj`,
  `input_layernorm.weight`, ..., still interleaved-pair RoPE), full precision or quantized by its `convert -q`
  (MLX's own packing, `scales`/`biases` beside each quantized weight, a `quantization` block in config.json):
  the packed weights are renamed and their rows permuted like float ones, never dequantized;
- transformers' (`CsmForConditionalGeneration`, `model_type: csm`: `backbone_model.`, `depth_decoder.`,
  rotate-half RoPE, the codec under `codec_model.`).

The original layouts hold no codec and no tokenizer: they are taken from the source folder when there
(`tokenizer-e351c8d8-checkpoint125.safetensors` or a `codec/` folder; `tokenizer.json`), from the
`codec`/`tokenizer` arguments, or else downloaded from kyutai/moshiko-pytorch-bf16 and unsloth/Llama-3.2-1B.
The renames themselves are `Model.sanitize`'s (`layouts.py`); this module reads and writes the folders.
"""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...checkpoint import (
    ModelLoadError,
    check_weights,
    load_safetensors,
    quantize_like_checkpoint,
    rename_keys,
    save_model,
)
from .. import mimi
from .layouts import CODEC_PREFIX, ORIGINAL_RENAMES, detect_layout
from .model import Model, ModelArgs

MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
TOKENIZER_REPO = "unsloth/Llama-3.2-1B"

def is_config(config: dict) -> bool:
    return config.get("model_type") in ("csm", "sesame") or "backbone_flavor" in config


def _to_mx(array) -> mx.array:
    if isinstance(array, mx.array):
        return array
    if array.dtype.name == "bfloat16":  # ml_dtypes, from a .pt checkpoint
        return mx.array(array.astype(np.float32)).astype(mx.bfloat16)
    return mx.array(array)


def _is_codec_file(path: Path) -> bool:
    return path.name == mimi.KYUTAI_CHECKPOINT or path.name.startswith("tokenizer-")


def read_weights(src: Path) -> dict:
    """The CSM weights of a folder: its *.safetensors (but a codec checkpoint), else `ckpt.pt`."""
    files = [f for f in sorted(src.glob("*.safetensors")) if not _is_codec_file(f)]
    weights = load_safetensors(files)
    if not files and (src / "ckpt.pt").is_file():
        from ...torch_io import load_torch_file

        state = load_torch_file(src / "ckpt.pt")
        state = state.get("model", state) if isinstance(state, dict) else state
        weights = {k: _to_mx(v) for k, v in state.items()}
    if not weights:
        raise FileNotFoundError(f"no CSM weights in {src} (expected *.safetensors or ckpt.pt)")
    return weights


def _renamed_layers(quantization: dict) -> dict:
    """A quantization block with its per-layer entries (MLX-Audio's module paths) under our names."""
    layers = {f"{k}.weight": v for k, v in quantization.items() if isinstance(v, (dict, bool))}
    renamed = {k.removesuffix(".weight"): v for k, v in rename_keys(layers, ORIGINAL_RENAMES).items()}
    return {**{k: v for k, v in quantization.items() if f"{k}.weight" not in layers}, **renamed}


def _download(repo_id: str, filename: str, what: str, hint: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception as e:
        raise FileNotFoundError(
            f"CSM needs {what}; {filename} could not be downloaded from {repo_id} ({type(e).__name__}). {hint}"
        ) from None


def find_codec(src: Path, codec=None) -> Path:
    """The Mimi checkpoint (file or folder) to pair with an original-layout CSM checkpoint."""
    for candidate in (codec, src / mimi.KYUTAI_CHECKPOINT, src / "codec"):
        if candidate is not None and Path(candidate).exists():
            return Path(candidate)
    if codec is not None:
        raise FileNotFoundError(f"codec checkpoint not found: {codec}")
    return _download(
        MIMI_REPO, mimi.KYUTAI_CHECKPOINT, "the Mimi codec",
        f"Put {mimi.KYUTAI_CHECKPOINT} (from {MIMI_REPO}) in {src} (on a machine with network: `hf download "
        f"{MIMI_REPO} {mimi.KYUTAI_CHECKPOINT} --local-dir {src}`), or pass codec=<file or folder>.",
    )


def find_tokenizer(src: Path, tokenizer=None) -> Path:
    for candidate in (tokenizer, src / "tokenizer.json"):
        if candidate is not None and Path(candidate).is_file():
            return Path(candidate)
    if tokenizer is not None:
        raise FileNotFoundError(f"tokenizer.json not found: {tokenizer}")
    return _download(
        TOKENIZER_REPO, "tokenizer.json", "the Llama-3 text tokenizer",
        f"Put the Llama-3.2 tokenizer.json (e.g. from {TOKENIZER_REPO}) in {src} (on a machine with network: "
        f"`hf download {TOKENIZER_REPO} tokenizer.json --local-dir {src}`), or pass tokenizer=<path>.",
    )


def convert(src_dir, dst_dir, codec=None, tokenizer=None) -> Path:
    """Write an MLX CSM folder at `dst_dir` from any supported checkpoint folder."""
    src, dst = Path(src_dir), Path(dst_dir)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{src} has no config.json")
    config = json.loads(config_path.read_text())
    if config.get("layout") == "mlx":
        shutil.copytree(src, dst, dirs_exist_ok=True)
        return dst
    weights = read_weights(src)
    detect_layout(weights)  # weights that are not CSM's are refused before a codec is looked for
    codec_config = config.get("codec_config") or {}
    codec_weights = {}
    if not any(k.startswith(CODEC_PREFIX) for k in weights):
        file_config, codec_weights = mimi.read_checkpoint(find_codec(src, codec))
        codec_config = codec_config or file_config
    config = {**config, "codec_config": {**codec_config, **mimi.ModelArgs.from_dict(codec_config).to_dict()}}
    args = ModelArgs.from_dict(config)
    model = Model(args)  # lazy: nothing is allocated
    weights = model.sanitize(weights)
    if codec_weights:
        weights.update({f"codec.{k}": v for k, v in model.codec.sanitize(codec_weights).items()})
    config = {k: v for k, v in config.items() if k != "quantization_config"}  # MLX-Audio's copy of the block
    if "quantization" in config:
        config["quantization"] = quantize_like_checkpoint(model, _renamed_layers(config["quantization"]), weights)
    elif any(k.endswith(".scales") for k in weights):
        raise ModelLoadError(f"{config_path}: the weights are quantized (they hold scales) but there is no "
                             "`quantization` block (group_size, bits) to read them with")
    check_weights(model, weights, src)  # names and shapes (a quantized layer without its scales is named)

    save_model(dst, weights, {**config, "model_type": "csm", "sample_rate": args.codec.sampling_rate})
    shutil.copy2(find_tokenizer(src, tokenizer), dst / "tokenizer.json")
    return dst
