"""Kokoro-82M's speed at each precision against float32, interleaved in one process.

    python bench/bench_precision_speed.py                          # float32, bfloat16, 8bit, 4bit; both texts
    python bench/bench_precision_speed.py --texts short --rounds 3

`bench_quant.py` runs each precision in its own process, one after another: right for memory, but on a shared
machine the load changes between processes. Here every model lives in one process and the takes are
interleaved: each round runs every precision once (the order rotates from round to round), so all of them see
the same load. What is timed is `Model(phonemes, voice row)` to evaluated audio on bench_kokoro.py's fixed
phoneme strings (no G2P, no pipeline), seed 0, after one untimed take per precision.

Models: the embedded Kokoro-82M; `bfloat16` cast with `set_dtype`; `Nbit` quantized with `quantize_model`
(every quantizable layer at N bits, group size 64), in memory (the same arrays `save_model` writes).

Columns: median seconds of the `--rounds` takes, RTF, and "speed vs float32": float32's median divided by this
precision's (above 1: faster than float32). The load average (1 minute) is printed before and after.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core, as the engine's applications do

import mlx.core as mx  # noqa: E402
from bench_kokoro import TEXTS, VOICE  # noqa: E402

from mlx_tts.models.kokoro.voices import VoiceBank, style_for_length  # noqa: E402
from mlx_tts.quantize import quantize_model  # noqa: E402
from mlx_tts.utils import EMBEDDED_MODEL, load_model  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "8bit", "4bit")


def build(precision: str):
    model = load_model(EMBEDDED_MODEL)
    if precision == "bfloat16":
        model.set_dtype(mx.bfloat16)
    elif precision != "float32":
        quantize_model(model, dict(model.config), 64, int(precision.removesuffix("bit")))
    return model


def take(model, phonemes: str, style) -> tuple:
    mx.random.seed(0)
    start = time.perf_counter()
    output = model(phonemes, style)
    mx.eval(output.audio)
    return time.perf_counter() - start, output.audio.size / model.sample_rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="also append the table to this markdown file")
    args = p.parse_args(argv)
    precisions = ["float32"] + [q for q in args.precisions if q != "float32"]
    models = {q: build(q) for q in precisions}
    pack = VoiceBank(models["float32"].path).resolve(VOICE)
    lines = []
    for text in args.texts:
        phonemes = TEXTS[text][1]
        style = style_for_length(pack, len(phonemes))
        load_before = os.getloadavg()[0]
        for q in precisions:
            take(models[q], phonemes, style)
        times = {q: [] for q in precisions}
        audio_s = {}
        for r in range(args.rounds):
            order = precisions[r % len(precisions):] + precisions[: r % len(precisions)]
            for q in order:
                seconds, audio_s[q] = take(models[q], phonemes, style)
                times[q].append(seconds)
        load_after = os.getloadavg()[0]
        base = statistics.median(times["float32"])
        lines += [
            f"Text `{text}` ({audio_s['float32']:.2f} s of audio), {args.rounds} interleaved round(s), medians; "
            f"load average {load_before:.1f} before, {load_after:.1f} after, {os.cpu_count()} cores "
            f"({platform.machine()}).",
            "",
            "| precision | median s | RTF | speed vs float32 | takes s |",
            "|---|---:|---:|---:|---|",
        ]
        for q in precisions:
            median = statistics.median(times[q])
            lines.append(f"| {q} | {median:.3f} | {median / audio_s[q]:.3f} | {base / median:.2f}x | "
                         + ", ".join(f"{t:.2f}" for t in times[q]) + " |")
        lines.append("")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
