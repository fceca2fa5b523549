"""Convert a checkpoint into an MLX model folder, optionally cast and quantized.

    python -m mlx_tts.convert --model prince-canuma/Kokoro-82M -o kokoro-mlx
    python -m mlx_tts.convert --model sesame/csm-1b -q --q-bits 4 -o csm-4bit
    python -m mlx_tts.convert --from-onnx kokoro-v1.0.int8.onnx --voices voices-v1.0.bin -o kokoro-from-onnx
"""

if __name__ == "__main__":  # the command line: set up the process before the imports below load mlx.core
    import mlx_tts

    mlx_tts.accelerate()

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .quantize import RECIPES, VALID_BITS, VALID_GROUP_SIZES, full_precision_layers, quantize_model
from .utils import ModelLoadError, load_mlx_folder, load_model, save_model

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def convert(
    model=None,
    output=None,
    from_onnx=None,
    voices=None,
    onnx_config=None,
    quantize=False,
    q_bits=8,
    q_group_size=64,
    q_recipe="uniform",
    dtype=None,
) -> Path:
    """Write an MLX folder at `output` from `model` (repo id or folder) or from a kokoro-onnx export."""
    if (model is None) == (from_onnx is None):
        raise ValueError("give exactly one of --model or --from-onnx")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} exists and is not empty; choose a new output folder")
    with tempfile.TemporaryDirectory() as tmp:
        if from_onnx is not None:
            from .models.kokoro.convert import convert_onnx
            from .models.kokoro.embedded import embedded_config

            if voices is None:
                raise ValueError("--from-onnx needs --voices (voices-v1.0.bin, an .npz or a folder of voices)")
            config = json.loads(Path(onnx_config).read_text()) if onnx_config else embedded_config()
            convert_onnx(from_onnx, voices, tmp, config)
            loaded = load_mlx_folder(Path(tmp))
        else:
            loaded = load_model(model)
        if dtype is not None:
            loaded.set_dtype(DTYPES[dtype])
        config = dict(loaded.config)
        if quantize:
            weights, config = quantize_model(loaded, config, group_size=q_group_size, bits=q_bits, recipe=q_recipe)
        else:
            weights = dict(tree_flatten(loaded.parameters()))
        return save_model(output, weights, config, loaded)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_tts.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Hugging Face repo id or local folder to convert")
    p.add_argument("--from-onnx", dest="from_onnx", help="a kokoro-onnx export (float, fp16 or int8)")
    p.add_argument("--voices", help="with --from-onnx: voices-v1.0.bin, an .npz, or a folder of voice files")
    p.add_argument("--config", dest="onnx_config", help="with --from-onnx: config.json (default: Kokoro-82M v1.0)")
    p.add_argument("-o", "--output", "--mlx-path", dest="output", required=True, help="output folder")
    p.add_argument("-q", "--quantize", action="store_true", help="quantize the weights")
    p.add_argument("--q-bits", dest="q_bits", type=int, default=8, choices=VALID_BITS)
    p.add_argument("--q-group-size", dest="q_group_size", type=int, default=64, choices=VALID_GROUP_SIZES)
    p.add_argument("--q-recipe", dest="q_recipe", default="uniform", choices=list(RECIPES))
    p.add_argument("--dtype", choices=list(DTYPES), help="cast the unquantized weights")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert(**vars(args))
    except (ValueError, FileNotFoundError, FileExistsError, ModelLoadError) as e:
        sys.exit(f"error: {e}")
    config = json.loads((out / "config.json").read_text())
    kept = full_precision_layers(config)
    print(f"Wrote {out}" + (f" ({len(kept)} layers kept in full precision: {', '.join(kept)})" if kept else ""))


if __name__ == "__main__":
    main()
