"""Weight quantization: `quantize_model(model, config, group_size, bits, recipe)` -> (weights, config).

A recipe is a list of per-layer rules `(regex, bits)` matched against module paths, first match wins;
`bits=None` keeps a layer in full precision. Named recipes:
- "uniform": every quantizable layer at `bits`;
- "mixed": embeddings, output layers and Kokoro's ALBERT at 8 bits, the audio codec in full precision, the rest
  at `bits` (ALBERT applies one shared layer 12 times, so its error compounds: at 4 bits it alone moves Kokoro's
  durations, while every other part of Kokoro at 4 bits stays near the 8-bit take);
- "keep-embeddings": embeddings, output layers and codec in full precision.

Quantizable layers are those with a `to_quantized` method: MLX's Linear and Embedding, and ours (Kokoro's
convolutions and LSTMs, 80% of its weights), whose quantized forms are `mlx_tts.layers.PackedWeights` and which
say how long their rows are (`quantized_width`). A weight is quantized in groups of `group_size` along its rows:
[out, in] for a Linear, [C_out, K * C_in / groups] for a convolution. Ours zero-pad their rows to whole groups.
Layers that can't take the group size (a Linear or Embedding whose input size isn't a multiple of it, one of
ours whose rows are shorter than one group) stay in full precision; they are logged and listed in the returned
config (`"quantization": {path: false}`), which is also how `load_model` knows to skip them.

The model is quantized in place. Quantizing an already quantized model is refused: quantize from the
full-precision source instead (re-quantizing would compound the errors).
"""

import logging
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

logger = logging.getLogger("mlx_tts")

VALID_BITS = (2, 3, 4, 5, 6, 8)
VALID_GROUP_SIZES = (32, 64, 128)

EMBEDDINGS = r"(^|\.)\w*embed\w*(\.|$)"
OUTPUT_LAYERS = r"(^|\.)(\w*head\w*|conv_post)(\.|$)"  # CSM's codebook heads, Kokoro's last convolution
SHARED_LAYERS = r"^bert\."  # Kokoro's ALBERT
CODEC = r"^codec(\.|$)"
RECIPES = {
    "uniform": [],
    "mixed": [(CODEC, None), (EMBEDDINGS, 8), (OUTPUT_LAYERS, 8), (SHARED_LAYERS, 8)],
    "keep-embeddings": [(CODEC, None), (EMBEDDINGS, None), (OUTPUT_LAYERS, None)],
}


@dataclass(frozen=True)
class Quantization:
    """The settings of one quantization, as `quantize_model` takes them."""

    bits: int
    group_size: int = 64
    recipe: str = "uniform"

    def __str__(self):
        return f"{self.bits}-bit, group {self.group_size}, {self.recipe}"

    @property
    def slug(self):  # for folder names
        return f"{self.bits}b-g{self.group_size}-{self.recipe}"


def check_bits(bits: int):
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, VALID_BITS))}; got {bits!r}")


def check_quantization_args(bits: int, group_size: int):
    check_bits(bits)
    if group_size not in VALID_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {', '.join(map(str, VALID_GROUP_SIZES))}; got {group_size!r}")


def resolve_recipe(recipe) -> list:
    """A recipe name or a list of `(regex, bits or None)` rules -> the checked list of rules."""
    if recipe is None:
        return []
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown quantization recipe {recipe!r}; available: {', '.join(RECIPES)}")
        return RECIPES[recipe]
    rules = []
    for rule in recipe:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ValueError(f"quantization rule {rule!r} is not a (regex, bits or None) pair")
        pattern, rule_bits = rule
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"quantization rule {pattern!r}: bad regular expression ({e})") from None
        if rule_bits is not None:
            check_bits(rule_bits)
        rules.append((pattern, rule_bits))
    return rules


# ---- quantizing a model ----


def is_quantized(model: nn.Module) -> bool:
    return any("scales" in m for _, m in model.named_modules())


def row_width(module: nn.Module) -> int:
    """The length of the rows a layer's weights are quantized in."""
    return getattr(module, "quantized_width", None) or module.weight.shape[-1]


def takes_group_size(module: nn.Module, group_size: int) -> bool:
    """MLX's quantized Linear and Embedding need whole groups; ours pad, which pays off from one group up."""
    if hasattr(module, "quantized_width"):
        return module.quantized_width >= group_size
    return module.weight.shape[-1] % group_size == 0


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
        if not takes_group_size(module, group_size):
            logger.warning("%s: rows of %d weights can't take group size %d; kept in full precision",
                           path, row_width(module), group_size)
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
