"""Weight quantization: `quantize_model(model, config, group_size, bits, recipe)` -> (weights, config).

A recipe is a list of per-layer rules `(regex, bits)` matched against module paths, first match wins;
`bits=None` keeps a layer in full precision. Named recipes:
- "uniform": every quantizable layer at `bits`;
- "mixed": embeddings and output heads at 8 bits, the audio codec in full precision, the rest at `bits`;
- "keep-embeddings": embeddings, heads and codec in full precision.

Layers whose input size isn't a multiple of the group size stay in full precision; they are logged and listed
in the returned config (`"quantization": {path: false}`), which is also how `load_model` knows to skip them.
The model is quantized in place. Quantizing an already quantized model is refused: quantize from the
full-precision source instead (re-quantizing would compound the errors).
"""

import logging
import re

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

logger = logging.getLogger("mlx_tts")

VALID_BITS = (2, 3, 4, 5, 6, 8)
VALID_GROUP_SIZES = (32, 64, 128)

EMBEDDINGS = r"(^|\.)\w*embed\w*(\.|$)"
HEADS = r"(^|\.)\w*head\w*(\.|$)"
CODEC = r"^codec(\.|$)"
RECIPES = {
    "uniform": [],
    "mixed": [(CODEC, None), (EMBEDDINGS, 8), (HEADS, 8)],
    "keep-embeddings": [(CODEC, None), (EMBEDDINGS, None), (HEADS, None)],
}


def check_bits(bits: int):
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, VALID_BITS))}; got {bits}")


def check_quantization_args(bits: int, group_size: int):
    check_bits(bits)
    if group_size not in VALID_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {', '.join(map(str, VALID_GROUP_SIZES))}; got {group_size}")


def resolve_recipe(recipe) -> list:
    if recipe is None:
        return []
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown quantization recipe {recipe!r}; available: {', '.join(RECIPES)}")
        return RECIPES[recipe]
    rules = list(recipe)
    for pattern, rule_bits in rules:
        re.compile(pattern)
        if rule_bits is not None:
            check_bits(rule_bits)
    return rules


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def quantize_model(model: nn.Module, config: dict, group_size: int = 64, bits: int = 8, recipe="uniform"):
    """Quantize `model` in place; return its weights (MLX layout) and the config that loads them."""
    check_quantization_args(bits, group_size)
    rules = resolve_recipe(recipe)
    if "quantization" in config or is_quantized(model):
        raise ValueError(
            "this model is already quantized; load its full-precision source and quantize that instead"
        )
    overrides = {}

    def predicate(path, module):
        if not hasattr(module, "to_quantized"):
            return False
        layer_bits = next((b for pattern, b in rules if re.search(pattern, path)), bits)
        if layer_bits is None:
            overrides[path] = False
            return False
        if module.weight.shape[-1] % group_size:
            logger.warning("%s: input size %d is not a multiple of %d; kept in full precision",
                           path, module.weight.shape[-1], group_size)
            overrides[path] = False
            return False
        if layer_bits != bits:
            overrides[path] = {"group_size": group_size, "bits": layer_bits}
            return dict(overrides[path])
        return True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    config = {**config, "quantization": {"group_size": group_size, "bits": bits, **overrides}}
    return weights, config


def full_precision_layers(config: dict) -> list:
    """The layers a quantized config keeps in full precision."""
    return sorted(k for k, v in config.get("quantization", {}).items() if v is False)
