"""Mimi weights in the layouts it is published in -> this package's MLX layout (`Model.sanitize`).

Layouts read:
- kyutai's original (`tokenizer-e351c8d8-checkpoint125.safetensors`, e.g. `encoder.model.0.conv.conv.weight`,
  fused `in_proj_weight`, interleaved-pair RoPE, codebooks as `embedding_sum` / `cluster_usage`);
- transformers' `MimiModel` as its checkpoints store it (`encoder.layers.0.conv.weight`, ...) and as its
  5.x state dict names it (`encoder.encoder_seanet.layers.0.conv.weight`, ...);
- this package's own layout (returned unchanged).

Conversion transposes convolutions to MLX's [out, kernel, in], permutes q/k rows from interleaved-pair to
rotate-half RoPE, and divides each codebook's `embedding_sum` by its `cluster_usage`.
"""

import re

import mlx.core as mx

from ...checkpoint import rename_keys, rope_interleaved_to_half, torch_conv_transpose_weight, torch_conv_weight

CODEBOOK_EPS = 1e-5  # floor of cluster_usage, as in kyutai's and transformers' codebooks

# kyutai's names -> transformers' checkpoint names (applied in order)
KYUTAI_RENAMES = [
    (r"^(encoder|decoder)\.model\.", r"\1.layers."),
    (r"\.(conv|convtr)\.\1\.\1\.", ".conv."),
    (r"\.(conv|convtr)\.\1\.", ".conv."),
    (r"^(encoder|decoder)_transformer\.transformer\.", r"\1_transformer."),
    (r"\.self_attn\.out_proj\.", ".self_attn.o_proj."),
    (r"\.self_attn\.in_projs\.0\.weight$", ".self_attn.in_proj_weight"),
    (r"\.linear1\.", ".mlp.fc1."),
    (r"\.linear2\.", ".mlp.fc2."),
    (r"\.norm1\.", ".input_layernorm."),
    (r"\.norm2\.", ".post_attention_layernorm."),
    (r"\.layer_scale_1\.", ".self_attn_layer_scale."),
    (r"\.layer_scale_2\.", ".mlp_layer_scale."),
    (r"^quantizer\.rvq_first\.(vq\.)?", "quantizer.semantic_residual_vector_quantizer."),
    (r"^quantizer\.rvq_rest\.(vq\.)?", "quantizer.acoustic_residual_vector_quantizer."),
    (r"\._codebook\.", ".codebook."),
    (r"\.embedding_sum$", ".embed_sum"),
    (r"\._initialized$", ".initialized"),
]

# transformers 5.x state-dict names -> transformers' checkpoint names
NESTED_RENAMES = [
    (r"^encoder\.encoder_seanet\.", "encoder."),
    (r"^encoder\.encoder_transformer\.", "encoder_transformer."),
    (r"^encoder\.downsample\.", "downsample."),
    (r"^decoder\.upsample\.", "upsample."),
    (r"^decoder\.decoder_transformer\.", "decoder_transformer."),
    (r"^decoder\.decoder_seanet\.", "decoder."),
]

SEANET = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(conv|block\.1\.conv|block\.3\.conv)\.(weight|bias)$")
TRANSFORMER = re.compile(r"^(encoder|decoder)_transformer\.layers\.(\d+)\.(.+)$")
CODEBOOK = re.compile(
    r"^quantizer\.(semantic|acoustic)_residual_vector_quantizer\.layers\.(\d+)\.codebook\.(\w+)$"
)
PROJECTION = re.compile(r"^quantizer\.(semantic|acoustic)_residual_vector_quantizer\.(input_proj|output_proj)\.weight$")
LAYER_SCALES = {"self_attn_layer_scale.scale": "attn_scale", "mlp_layer_scale.scale": "mlp_scale"}


def detect_layout(weights: dict) -> str:
    if "encoder.init_conv.weight" in weights:
        return "mlx"
    if any(k.startswith("encoder.model.") for k in weights):
        return "kyutai"
    if any(k.startswith(("encoder.layers.", "encoder.encoder_seanet.")) for k in weights):
        return "transformers"
    sample = ", ".join(sorted(weights)[:5])
    raise ValueError(f"not a Mimi checkpoint: unrecognised weight names ({sample} ...)")


def _split_fused_qkv(weights: dict, args) -> dict:
    """kyutai's fused `in_proj_weight` -> q/k/v projections, q and k permuted to rotate-half RoPE."""
    out = {}
    for key, value in weights.items():
        if not key.endswith(".self_attn.in_proj_weight"):
            out[key] = value
            continue
        prefix = key[: -len("in_proj_weight")]
        q_dim, kv_dim = args.num_attention_heads * args.head_dim, args.num_key_value_heads * args.head_dim
        q, k, v = value[:q_dim], value[q_dim : q_dim + kv_dim], value[q_dim + kv_dim :]
        out[prefix + "q_proj.weight"] = rope_interleaved_to_half(q, args.num_attention_heads)
        out[prefix + "k_proj.weight"] = rope_interleaved_to_half(k, args.num_key_value_heads)
        out[prefix + "v_proj.weight"] = v
    return out


def _seanet_paths(args, side: str) -> dict:
    """Index in transformers' flat SEANet layer list (ELUs included) -> our module path."""
    paths, index = {0: "init_conv"}, 1

    def add_residuals(i):
        nonlocal index
        for j in range(args.num_residual_layers):
            paths[index] = f"blocks.{i}.residuals.{j}"
            index += 1

    for i in range(len(args.upsampling_ratios)):
        if side == "encoder":
            add_residuals(i)
            paths[index + 1] = f"blocks.{i}.downsample"  # index itself is an ELU
            index += 2
        else:
            paths[index + 1] = f"blocks.{i}.upsample"
            index += 2
            add_residuals(i)
    paths[index + 1] = "final_conv"
    return paths


def _from_transformers(weights: dict, args) -> dict:
    out, codebooks, unused = {}, {}, []
    seanet = {side: _seanet_paths(args, side) for side in ("encoder", "decoder")}
    for key, value in weights.items():
        if m := SEANET.match(key):
            side, index, part, name = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            path = seanet[side].get(index)
            if path is None:
                unused.append(key)
                continue
            if part != "conv":
                path += ".conv1" if part.startswith("block.1") else ".conv2"
            if name == "bias":
                out[f"{side}.{path}.bias"] = value
            elif path.endswith("upsample"):
                out[f"{side}.{path}.weight"] = torch_conv_transpose_weight(value, 1)
            else:
                out[f"{side}.{path}.weight"] = torch_conv_weight(value)
        elif m := TRANSFORMER.match(key):
            side, layer, rest = m.groups()
            out[f"{side}_transformer.layers.{layer}.{LAYER_SCALES.get(rest, rest)}"] = value
        elif key == "downsample.conv.weight":
            out["downsample.weight"] = torch_conv_weight(value)
        elif key == "upsample.conv.weight":
            out["upsample.weight"] = torch_conv_transpose_weight(value, args.upsample_groups)
        elif m := PROJECTION.match(key):
            out[f"quantizer.{m.group(1)}.{m.group(2)}.weight"] = value.squeeze(-1)
        elif m := CODEBOOK.match(key):
            codebooks.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"Mimi checkpoint has weights this model does not use: {', '.join(sorted(unused)[:8])}")
    for half, levels in codebooks.items():
        centroids = []
        for level in range(len(levels)):
            parts = levels[level]
            usage = mx.maximum(parts["cluster_usage"].astype(mx.float32), CODEBOOK_EPS)
            centroids.append(parts["embed_sum"].astype(mx.float32) / usage[:, None])
        out[f"quantizer.{half}.codebooks"] = mx.stack(centroids)
    for half in ("semantic", "acoustic"):  # transformers omits the projections when they would be square
        for proj in ("input_proj", "output_proj"):
            if f"quantizer.{half}.{proj}.weight" not in out and args.codebook_dim == args.hidden_size:
                out[f"quantizer.{half}.{proj}.weight"] = mx.eye(args.hidden_size)
    return out


def to_mlx(weights: dict, args) -> dict:
    """Any supported Mimi layout -> {name: mx.array} in this package's layout, float32 (`args`: ModelArgs)."""
    layout = detect_layout(weights)
    if layout == "kyutai":
        weights = _split_fused_qkv(rename_keys(weights, KYUTAI_RENAMES), args)
    elif layout == "transformers":
        weights = rename_keys(weights, NESTED_RENAMES)
    if layout != "mlx":
        weights = _from_transformers(weights, args)
    return {k: v.astype(mx.float32) for k, v in weights.items()}
