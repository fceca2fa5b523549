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
"""

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...checkpoint import ModelLoadError, check_weights, load_safetensors, rename_keys
from ...utils import quantize_like_checkpoint, save_model
from .. import mimi
from ..mimi.convert import rope_interleaved_to_half
from .model import Model, ModelArgs

MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
TOKENIZER_REPO = "unsloth/Llama-3.2-1B"

ORIGINAL_RENAMES = [
    (r"^model\.", ""),
    (r"\.attn\.", ".self_attn."),
    (r"\.output_proj\.", ".o_proj."),
    (r"\.mlp\.w1\.", ".mlp.gate_proj."),
    (r"\.mlp\.w2\.", ".mlp.down_proj."),
    (r"\.mlp\.w3\.", ".mlp.up_proj."),
    (r"\.sa_norm\.scale$", ".input_layernorm.weight"),
    (r"\.mlp_norm\.scale$", ".post_attention_layernorm.weight"),
    (r"\.norm\.scale$", ".norm.weight"),
]
TRANSFORMERS_RENAMES = [
    (r"^backbone_model\.", "backbone."),
    (r"^depth_decoder\.model\.inputs_embeds_projector\.", "projection."),
    (r"^depth_decoder\.model\.", "decoder."),
    (r"^depth_decoder\.codebooks_head\.weight$", "audio_head"),
    (r"^embed_text_tokens\.", "text_embeddings."),
    (r"^lm_head\.", "codebook0_head."),
]
# the depth decoder's code embeddings are tied to the backbone's audio embeddings: a checkpoint holds either
AUDIO_EMBEDDINGS = ("backbone_model.embed_tokens.embed_audio_tokens.weight", "depth_decoder.model.embed_tokens.weight")
# a quantized projection is permuted as a float one: its rows (packed weight, scales, biases) are whole output rows
QK_PROJ = re.compile(r"^(backbone|decoder)\.layers\.\d+\.self_attn\.(q|k)_proj\.(weight|scales|biases)$")


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


def detect_layout(weights: dict) -> str:
    if any(k.startswith("backbone_model.") for k in weights):
        return "transformers"
    if any(k.startswith(("backbone.layers.", "model.backbone.layers.")) for k in weights):
        return "original"
    raise ValueError(f"not a CSM checkpoint: unrecognised weight names ({', '.join(sorted(weights)[:5])} ...)")


def from_original(weights: dict, args: ModelArgs) -> dict:
    """sesame's or MLX-Audio's names -> ours, q/k permuted from interleaved-pair to rotate-half RoPE."""
    out = rename_keys(weights, ORIGINAL_RENAMES)
    heads = {"backbone": args.backbone, "decoder": args.decoder}
    for key in out:
        if m := QK_PROJ.match(key):
            stack = heads[m.group(1)]
            out[key] = rope_interleaved_to_half(
                out[key], stack.num_attention_heads if m.group(2) == "q" else stack.num_key_value_heads
            )
    return out


def _renamed_layers(quantization: dict) -> dict:
    """A quantization block with its per-layer entries (MLX-Audio's module paths) under our names."""
    layers = {f"{k}.weight": v for k, v in quantization.items() if isinstance(v, (dict, bool))}
    renamed = {k.removesuffix(".weight"): v for k, v in rename_keys(layers, ORIGINAL_RENAMES).items()}
    return {**{k: v for k, v in quantization.items() if f"{k}.weight" not in layers}, **renamed}


def from_transformers(weights: dict) -> tuple:
    """transformers' names -> ours; returns (CSM weights, codec weights in transformers' Mimi names)."""
    codec = {k[len("codec_model.") :]: v for k, v in weights.items() if k.startswith("codec_model.")}
    csm = {k: v for k, v in weights.items() if not k.startswith("codec_model.") and k not in AUDIO_EMBEDDINGS}
    audio_embeddings = [weights[k] for k in AUDIO_EMBEDDINGS if k in weights]
    if audio_embeddings:
        csm["audio_embeddings.weight"] = audio_embeddings[0]
    return rename_keys(csm, TRANSFORMERS_RENAMES), codec


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
    layout = detect_layout(weights)
    codec_weights = {}
    if layout == "transformers":
        weights, codec_weights = from_transformers(weights)
    codec_config = config.get("codec_config") or {}
    if not codec_weights:
        file_config, codec_weights = mimi.read_checkpoint(find_codec(src, codec))
        codec_config = codec_config or file_config
    config = {**config, "codec_config": {**codec_config, **mimi.ModelArgs.from_dict(codec_config).to_dict()}}
    args = ModelArgs.from_dict(config)
    if layout == "original":
        weights = from_original(weights, args)
    weights.update({f"codec.{k}": v for k, v in mimi.convert_weights(codec_weights, args.codec).items()})
    model = Model(args)  # lazy: nothing is allocated
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
