"""Kokoro-82M at 4 bits: MLX-Audio's choice of layers against ours, and which layers the difference comes from.

    python bench/bench_recipes.py                  # the default text of bench_quant.py, voice jf_alpha, seed 0
    python bench/bench_recipes.py --bits 4 --seeds 0 1 2 --text "Hello there."

Every row quantizes the embedded Kokoro-82M (real weights) in memory, affine, group size 64, with one recipe,
and compares a take of the same text, voice and seed with the float32 take (`mlx_tts.quality`):
- `mlx-audio`: what MLX-Audio 0.6.2's `convert -q` quantizes: each module with MLX's `to_quantized` (Linear and
  Embedding: ALBERT, the projections, every AdaIN/AdaLayerNorm `fc`, `duration_proj`, the embeddings) whose rows
  are a multiple of 64; its convolutions and LSTMs have no quantized form and stay float;
- `uniform`, `mixed`: `mlx_tts.quantize`'s recipes (ours also quantize the convolutions and LSTMs, 80% of the
  weights; `mixed` keeps embeddings, output layers and ALBERT at 8 bits);
- ablations: `mlx-audio` with ALBERT at 8 bits, `mlx-audio` with ALBERT alone, `uniform` without ALBERT (8 bits),
  and our convolutions and LSTMs alone (`convs+lstms`).
Columns: log-mel distance frame by frame (one changed duration shifts all later frames) and after alignment
(dynamic time warping), total frames and the share of tokens whose predicted duration is unchanged.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: it loads the CPU BLAS

import mlx.nn as nn  # noqa: E402

from mlx_tts import quality  # noqa: E402
from mlx_tts.quantize import quantize_model, takes_group_size  # noqa: E402
from mlx_tts.utils import EMBEDDED_MODEL, load_model  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."
ALBERT = r"^bert\."


def mlx_audio_layers(albert_bits=None, only_albert=False):
    """MLX-Audio's predicate (Linear/Embedding, rows a multiple of 64), as an nn.quantize class predicate."""

    def predicate(path, module):
        if not (isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.shape[-1] % 64 == 0):
            return False
        is_albert = path.startswith("bert.")
        if only_albert and not is_albert:
            return False
        return {"group_size": 64, "bits": albert_bits} if is_albert and albert_bits else True

    return predicate


def ours_only_convs_and_lstms(path, module):
    return (
        hasattr(module, "to_quantized")
        and not isinstance(module, (nn.Linear, nn.Embedding))
        and takes_group_size(module, 64)
    )


def candidates(bits: int) -> dict:
    """name -> function quantizing a fresh model in place."""
    return {
        "mlx-audio": lambda m: nn.quantize(m, 64, bits, class_predicate=mlx_audio_layers()),
        "uniform": lambda m: quantize_model(m, m.config, 64, bits, "uniform"),
        "mixed": lambda m: quantize_model(m, m.config, 64, bits, "mixed"),
        "mlx-audio, ALBERT 8-bit": lambda m: nn.quantize(m, 64, bits, class_predicate=mlx_audio_layers(albert_bits=8)),
        "mlx-audio, ALBERT only": lambda m: nn.quantize(
            m, 64, bits, class_predicate=mlx_audio_layers(only_albert=True)
        ),
        "uniform, ALBERT 8-bit": lambda m: quantize_model(m, m.config, 64, bits, [(ALBERT, 8)]),
        "convs+lstms only": lambda m: nn.quantize(m, 64, bits, class_predicate=ours_only_convs_and_lstms),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--voice", default="jf_alpha")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)

    reference = load_model(EMBEDDED_MODEL)
    print(f"Kokoro-82M (embedded), {args.bits} bits, group size 64, voice {args.voice}, text {args.text!r}\n")
    print("| recipe | seed | log-mel dB | aligned dB | frames (float32) | durations equal |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        float_take = quality.kokoro_take(reference, args.text, args.voice, seed=seed)
        for name, quantize in candidates(args.bits).items():
            model = load_model(EMBEDDED_MODEL)
            quantize(model)
            report = quality.compare_takes(float_take, quality.kokoro_take(model, args.text, args.voice, seed=seed))
            durations = report["durations"]
            print(f"| {name} | {seed} | {report['log_mel_distance_db']:.2f} "
                  f"| {report['aligned_log_mel_distance_db']:.2f} "
                  f"| {durations['frames_candidate']} ({durations['frames_reference']}) "
                  f"| {durations['tokens_equal']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
