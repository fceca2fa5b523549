"""Tiny Mimi and CSM configurations for the tests, random MLX models, a small Llama-3-style tokenizer, and
the reverse renames that turn transformers' state dicts into the original checkpoint layouts (kyutai's
Mimi, sesame's torchtune CSM, MLX-Audio's CSM), so that every converter can be checked against one source.
"""

import json
import re

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

# kyutai's frame geometry (ratios 8, 6, 5, 4 and stride 2: 1920 samples per frame), everything else tiny.
# sliding_window 10 (at 25 Hz) makes the window matter for clips over 0.4 s.
MIMI_CONFIG = dict(
    hidden_size=32, num_filters=4, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=8,
    intermediate_size=64, codebook_size=64, codebook_dim=16, vector_quantization_hidden_dimension=16,
    num_quantizers=32, upsample_groups=32, sliding_window=10,
)
AUDIO_VOCAB = 67  # codebook_size + 3, like 2048 + 3
TEXT_VOCAB = 100
SUPPRESS = list(range(MIMI_CONFIG["codebook_size"], AUDIO_VOCAB))

# transformers' restatement of the Llama-3.1 RoPE scaling (equal to torchtune's 8192 / 1 / 4)
BACKBONE_ROPE = dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=0.125,
                     high_freq_factor=0.5, original_max_position_embeddings=1024)
DECODER_ROPE = dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=0.001953125,
                    high_freq_factor=0.0078125, original_max_position_embeddings=16)
BACKBONE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
DECODER = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def csm_config_dict() -> dict:
    """A transformers-style CSM config (what `CsmConfig(**...)` takes and what our converter reads)."""
    return dict(
        model_type="csm", num_codebooks=32, vocab_size=AUDIO_VOCAB, text_vocab_size=TEXT_VOCAB,
        max_position_embeddings=2048, rope_parameters=BACKBONE_ROPE, audio_token_id=98, audio_eos_token_id=99,
        pad_token_id=98, bos_token_id=96, **BACKBONE,
        depth_decoder_config=dict(num_codebooks=32, backbone_hidden_size=BACKBONE["hidden_size"],
                                  vocab_size=AUDIO_VOCAB, max_position_embeddings=33, rope_parameters=DECODER_ROPE,
                                  **DECODER),
        codec_config=dict(model_type="mimi", **MIMI_CONFIG),
    )


def original_flavors():
    """torchtune-style flavors equal to the tiny backbone and decoder, for sesame's original config."""
    from mlx_tts.models.csm.llama import LlamaArgs
    from mlx_tts.models.csm.model import LLAMA31_ROPE

    return {
        "tiny-backbone": LlamaArgs(**BACKBONE, rope_scaling=LLAMA31_ROPE),
        "tiny-decoder": LlamaArgs(**DECODER, rope_scaling=LLAMA31_ROPE),
    }


def randomize(model, seed=0, scale=1.0):
    """Random weights for an MLX model (zeros-initialized convolutions, codebooks and heads included)."""
    mx.random.seed(seed)

    def draw(path, p):
        if path.endswith(("norm.weight", "layernorm.weight", "scale")):
            return mx.ones(p.shape) if "norm" in path else mx.full(p.shape, 0.3)
        if path.endswith("codebooks"):
            return mx.random.normal(p.shape)
        fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else p.shape[0]
        return mx.random.normal(p.shape) * scale / np.sqrt(fan_in)

    model.update(tree_map_with_path(draw, model.parameters()))
    mx.eval(model.parameters())
    return model


def make_tokenizer(path):
    """A word-level tokenizer.json with Llama-3's begin/end-of-text tokens (ids < TEXT_VOCAB)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "<|begin_of_text|>", "<|end_of_text|>", "[", "]", "0", "1", "2", ".", ",", "!", "?"]
    words += "hello world this is a test of the voice clone how are you today fine thanks".split()
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    tokenizer.save(str(path))
    return path


def tiny_mlx_csm_folder(folder, seed=0):
    """A loadable MLX CSM folder with random weights (no torch needed)."""
    from mlx_tts.models import csm

    config = {**csm_config_dict(), "layout": "mlx", "sample_rate": 24000}
    model = randomize(csm.Model(csm.ModelArgs.from_dict(config)), seed)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    make_tokenizer(folder / "tokenizer.json")
    return folder


def speech_like(seconds, seed=0, sample_rate=24000):
    """A voiced, amplitude-modulated test signal with a little noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 300 * t + 1.0)
    return (0.2 * tone * (1 + 0.6 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# ---- reverse layouts, from transformers' state dicts ----

def _interleave(weight: np.ndarray, heads: int) -> np.ndarray:
    """rotate-half q/k rows -> interleaved-pair rows (the inverse of the converters' permutation)."""
    out_dims, in_dims = weight.shape
    return weight.reshape(heads, 2, out_dims // heads // 2, in_dims).swapaxes(1, 2).reshape(out_dims, in_dims)


def kyutai_state_dict(mimi_model) -> dict:
    """A transformers `MimiModel` -> kyutai's checkpoint names and layout (fused qkv, interleaved RoPE)."""
    config = mimi_model.config
    state = {k: v.numpy() for k, v in mimi_model.state_dict().items()}
    seanet = {"encoder": mimi_model.encoder.encoder_seanet, "decoder": mimi_model.decoder.decoder_seanet}
    out = {}
    for key, value in state.items():
        if m := re.match(r"^(encoder|decoder)\.\1_seanet\.layers\.(\d+)\.(.*)$", key):
            side, index, rest = m.group(1), int(m.group(2)), m.group(3)
            is_transpose = "ConvTranspose" in type(seanet[side].layers[index]).__name__
            rest = rest.replace("conv.", "convtr.convtr." if is_transpose else "conv.conv.")
            out[f"{side}.model.{index}.{rest}"] = value
        elif key == "encoder.downsample.conv.weight":
            out["downsample.conv.conv.conv.weight"] = value
        elif key == "decoder.upsample.conv.weight":
            out["upsample.convtr.convtr.convtr.weight"] = value
        elif m := re.match(r"^(encoder|decoder)\.\1_transformer\.layers\.(\d+)\.(.*)$", key):
            side, layer, rest = m.groups()
            prefix = f"{side}_transformer.transformer.layers.{layer}."
            if rest == "self_attn.q_proj.weight":
                q = _interleave(value, config.num_attention_heads)
                k = _interleave(state[key.replace("q_proj", "k_proj")], config.num_key_value_heads)
                v = state[key.replace("q_proj", "v_proj")]
                out[prefix + "self_attn.in_proj_weight"] = np.concatenate([q, k, v])
            elif rest in ("self_attn.k_proj.weight", "self_attn.v_proj.weight"):
                continue
            else:
                for old, new in (("self_attn.o_proj", "self_attn.out_proj"), ("mlp.fc1", "linear1"),
                                 ("mlp.fc2", "linear2"), ("input_layernorm", "norm1"),
                                 ("post_attention_layernorm", "norm2"), ("self_attn_layer_scale", "layer_scale_1"),
                                 ("mlp_layer_scale", "layer_scale_2")):
                    rest = rest.replace(old, new)
                out[prefix + rest] = value
        elif m := re.match(r"^quantizer\.(semantic|acoustic)_residual_vector_quantizer\.(.*)$", key):
            half = "rvq_first" if m.group(1) == "semantic" else "rvq_rest"
            rest = m.group(2).replace("codebook.embed_sum", "_codebook.embedding_sum")
            rest = rest.replace("codebook.cluster_usage", "_codebook.cluster_usage")
            rest = rest.replace("codebook.initialized", "_codebook._initialized")
            out[f"quantizer.{half}.{'vq.' if rest.startswith('layers') else ''}{rest}"] = value
        else:
            raise KeyError(key)
    return {k: mx.array(v) for k, v in out.items()}


def original_csm_state_dict(csm_model, variant="sesame") -> dict:
    """A transformers `CsmForConditionalGeneration` (codec left out) -> sesame's torchtune names with
    interleaved RoPE, or MLX-Audio's renaming of them (`variant="mlx-audio"`, under `model.`)."""
    config = csm_model.config
    decoder = config.depth_decoder_config
    heads = {"backbone": (config.num_attention_heads, config.num_key_value_heads),
             "decoder": (decoder.num_attention_heads, decoder.num_key_value_heads)}
    renames = [
        (r"^backbone_model\.", "backbone."), (r"^depth_decoder\.model\.layers\.", "decoder.layers."),
        (r"^depth_decoder\.model\.norm\.", "decoder.norm."), (r"^embed_text_tokens\.", "text_embeddings."),
        (r"^depth_decoder\.model\.embed_tokens\.", "audio_embeddings."),
        (r"^depth_decoder\.model\.inputs_embeds_projector\.", "projection."),
        (r"^lm_head\.", "codebook0_head."), (r"^depth_decoder\.codebooks_head\.weight$", "audio_head"),
    ]
    if variant == "sesame":
        renames += [
            (r"\.self_attn\.", ".attn."), (r"\.o_proj\.", ".output_proj."), (r"\.gate_proj\.", ".w1."),
            (r"\.down_proj\.", ".w2."), (r"\.up_proj\.", ".w3."), (r"\.input_layernorm\.weight$", ".sa_norm.scale"),
            (r"\.post_attention_layernorm\.weight$", ".mlp_norm.scale"), (r"\.norm\.weight$", ".norm.scale"),
        ]
    out = {}
    for key, value in csm_model.state_dict().items():
        if key.startswith("codec_model.") or key == "backbone_model.embed_tokens.embed_audio_tokens.weight":
            continue
        value = value.numpy()
        if m := re.match(r"^(backbone_model|depth_decoder\.model)\.layers\.\d+\.self_attn\.(q|k)_proj\.weight$", key):
            q_heads, kv_heads = heads["backbone" if m.group(1) == "backbone_model" else "decoder"]
            value = _interleave(value, q_heads if m.group(2) == "q" else kv_heads)
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[("model." if variant == "mlx-audio" else "") + key] = value
    return {k: mx.array(v) for k, v in out.items()}
