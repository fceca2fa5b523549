"""CSM weights in the layouts it is published in -> this package's MLX layout (`Model.sanitize`).

- sesame's original and MLX-Audio's (torchtune names, or the same under `model.` renamed `self_attn`,
  `gate_proj`, ...; interleaved-pair RoPE, so q/k rows are permuted to rotate-half; quantized projections are
  permuted as float ones, their packed rows being whole output rows);
- transformers' (`backbone_model.`, `depth_decoder.`, rotate-half RoPE, the codec under `codec_model.`).
"""

import re

from ...checkpoint import rename_keys, rope_interleaved_to_half

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
CODEC_PREFIX = "codec_model."  # transformers' checkpoints hold the codec; the original layouts don't


def detect_layout(weights: dict) -> str:
    if any(k.startswith("backbone_model.") for k in weights):
        return "transformers"
    if any(k.startswith(("backbone.layers.", "model.backbone.layers.")) for k in weights):
        return "original"
    raise ValueError(f"not a CSM checkpoint: unrecognised weight names ({', '.join(sorted(weights)[:5])} ...)")


def from_original(weights: dict, args) -> dict:
    """sesame's or MLX-Audio's names -> ours, q/k permuted from interleaved-pair to rotate-half RoPE
    (`args`: ModelArgs)."""
    out = rename_keys(weights, ORIGINAL_RENAMES)
    heads = {"backbone": args.backbone, "decoder": args.decoder}
    for key in out:
        if m := QK_PROJ.match(key):
            stack = heads[m.group(1)]
            out[key] = rope_interleaved_to_half(
                out[key], stack.num_attention_heads if m.group(2) == "q" else stack.num_key_value_heads
            )
    return out


def from_transformers(weights: dict) -> tuple:
    """transformers' names -> ours; returns (CSM weights, codec weights in transformers' Mimi names)."""
    codec = {k[len(CODEC_PREFIX) :]: v for k, v in weights.items() if k.startswith(CODEC_PREFIX)}
    csm = {k: v for k, v in weights.items() if not k.startswith(CODEC_PREFIX) and k not in AUDIO_EMBEDDINGS}
    audio_embeddings = [weights[k] for k in AUDIO_EMBEDDINGS if k in weights]
    if audio_embeddings:
        csm["audio_embeddings.weight"] = audio_embeddings[0]
    return rename_keys(csm, TRANSFORMERS_RENAMES), codec
