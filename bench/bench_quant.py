"""Quantization benchmark: size, memory, speed and quality of Kokoro-82M (real weights) and CSM-1B (random
weights at its real size) at every bit width, against the float32 and bfloat16 models.

    python bench/bench_quant.py                                   # both models, every precision
    python bench/bench_quant.py --models kokoro --precisions float32 8bit 4bit --runs 1

Precisions: `float32`, `bfloat16`, `Nbit` (N = 2, 3, 4, 5, 6, 8: every quantizable layer at N bits, except an
audio codec, kept float32), `mixed-Nbit` (the "mixed" recipe of `mlx_tts.quantize`), all at `--group-size`.
Each (model, precision) runs in its own process, float32 first: its outputs are the quality reference.

Kokoro: `load_model(EMBEDDED_MODEL)` (Kokoro-82M v1.0 as recovered from the int8 ONNX export), cast or
quantized with `quantize_model`, written with `save_model` and loaded back from that folder, so what is
measured is what a user loads. `--runs` timed takes of `--text` after one warm-up (voice `--voice`, seed 0).
CSM: `bench_csm.build_model` (CSM-1B's architecture, random weights, seed 0), quantized with `quantize_model`.
`--frames` generated frames after one warm-up frame, prompt of `--prompt` random text tokens.

Columns:
- disk MB: the weights file (model.safetensors) as written; memory MB: bytes of the model's parameters;
- saved vs f32 / vs bf16: 1 - memory / memory of the float32 / bfloat16 model;
- Kokoro: RTF (median synthesis time / audio duration); against the float32 take: log-mel distance (mean
  absolute dB, 80 dB range) frame by frame and "aligned" (after dynamic time warping: one changed duration
  shifts all that follows), spectral SNR (STFT magnitudes), waveform SNR, and the share of tokens whose
  predicted duration is unchanged (see `mlx_tts.quality`);
- CSM: ms per frame (80 ms of audio); logits error: relative RMS error of the backbone's codebook-0 logits and
  the depth decoder's codebook-1 logits on a fixed prompt, against float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: it loads the CPU BLAS

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_tts import quality  # noqa: E402
from mlx_tts.models.csm import make_sampler  # noqa: E402
from mlx_tts.quantize import CODEC, VALID_BITS, VALID_GROUP_SIZES, quantize_model  # noqa: E402
from mlx_tts.utils import EMBEDDED_MODEL, load_model, save_model  # noqa: E402

import bench_csm  # noqa: E402

PRECISIONS = ("float32", "bfloat16", *(f"{b}bit" for b in sorted(VALID_BITS, reverse=True)), "mixed-4bit")
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."
FRAME_MS = 80


def parse_precision(precision: str):
    """-> (bits, recipe) for a quantized precision, None for float32/bfloat16."""
    if precision in ("float32", "bfloat16"):
        return None
    name, _, bits = precision.rpartition("-")
    bits = int(bits.removesuffix("bit"))
    return bits, ("mixed" if name == "mixed" else [(CODEC, None)])


def parameter_mb(model) -> float:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 2**20


def kokoro_worker(precision: str, group_size: int, text: str, voice: str, runs: int, scratch: Path) -> dict:
    model = load_model(EMBEDDED_MODEL)
    config = dict(model.config)
    if precision == "bfloat16":
        model.set_dtype(mx.bfloat16)
    if quantized := parse_precision(precision):
        weights, config = quantize_model(model, config, group_size, quantized[0], recipe=quantized[1])
    else:
        weights = dict(tree_flatten(model.parameters()))
    folder = save_model(scratch / f"kokoro-{precision}", weights, config, source=model)
    model = load_model(folder)
    takes = [quality.kokoro_take(model, text, voice, seed=0) for _ in range(runs + 1)]
    take = takes[-1]
    reference_file = scratch / "kokoro-float32.npz"
    if precision == "float32":
        np.savez(reference_file, audio=take.audio, durations=take.durations)
    reference = np.load(reference_file)
    return dict(
        disk_mb=(folder / "model.safetensors").stat().st_size / 2**20,
        memory_mb=parameter_mb(model),
        rtf=statistics.median(t.real_time_factor for t in takes[1:]),
        audio_s=len(take.audio) / quality.SAMPLE_RATE,
        log_mel_db=quality.log_mel_distance(reference["audio"], take.audio),
        aligned_log_mel_db=quality.aligned_log_mel_distance(reference["audio"], take.audio),
        spectral_snr_db=quality.spectral_snr_db(reference["audio"], take.audio),
        snr_db=quality.snr_db(reference["audio"], take.audio),
        durations_equal=quality.duration_agreement(reference["durations"], take.durations)["tokens_equal"],
    )


def csm_prompt(model, positions: int):
    """A fixed prompt of random text tokens: tokens, mask [1, positions, codebooks + 1]."""
    args = model.args
    tokens = mx.zeros((1, positions, args.audio_num_codebooks + 1), mx.int32)
    tokens[..., -1] = mx.random.randint(0, args.text_vocab_size, (1, positions), key=mx.random.key(1))
    mask = mx.zeros(tokens.shape, mx.bool_)
    mask[..., -1] = True
    return tokens, mask


def csm_logits(model, prompt: int) -> np.ndarray:
    """Codebook-0 logits of the backbone after the fixed prompt, and the depth decoder's codebook-1 logits
    after a fixed code 0, as one float32 vector."""
    tokens, mask = csm_prompt(model, prompt)
    hidden = model.backbone(model.embed_frames(tokens, mask), model.backbone.make_cache())[:, -1]
    codebook0 = model.codebook0_head(hidden)
    x = mx.stack([hidden, model.audio_embeddings(mx.array([1]))], axis=1)
    codebook1 = model.decoder(model.projection(x), model.decoder.make_cache())[:, -1] @ model.audio_head[0]
    return np.asarray(mx.concatenate([codebook0, codebook1], axis=-1).astype(mx.float32)).reshape(-1)


def csm_worker(precision: str, group_size: int, frames: int, prompt: int, scratch: Path) -> dict:
    quantized = parse_precision(precision)
    model = bench_csm.build_model("float32" if quantized else precision)
    if quantized:
        weights, _ = quantize_model(model, {}, group_size, quantized[0], recipe=quantized[1])
    else:
        weights = dict(tree_flatten(model.parameters()))
    weights_file = scratch / f"csm-{precision}.safetensors"
    mx.save_safetensors(str(weights_file), weights, metadata={"format": "mlx"})
    disk_mb = weights_file.stat().st_size / 2**20
    weights_file.unlink()  # gigabytes
    del weights

    logits = csm_logits(model, prompt)
    reference_file = scratch / "csm-float32.npy"
    if precision == "float32":
        np.save(reference_file, logits)
    reference = np.load(reference_file)
    logits_error = float(np.sqrt(np.mean((logits - reference) ** 2) / np.mean(reference**2)))

    stamps = [time.perf_counter()]
    for _ in model.generate(*csm_prompt(model, prompt), frames + 2, make_sampler(0.9, 50, seed=0)):
        stamps.append(time.perf_counter())  # one frame: its depth decoder pass and the backbone step before it
    intervals = np.diff(stamps)[2:]  # the first includes the prompt, the second is a warm-up
    return dict(disk_mb=disk_mb, memory_mb=parameter_mb(model), frame_ms=1000 * float(np.mean(intervals)),
                frames=len(intervals), logits_error=logits_error)


def percent_saved(row: dict, base: dict) -> str:
    return f"{100 * (1 - row['memory_mb'] / base['memory_mb']):.0f}%" if base else "-"


def kokoro_table(rows: dict) -> list:
    f32, bf16 = rows.get("float32"), rows.get("bfloat16")
    lines = ["| precision | disk MB | memory MB | saved vs f32 | saved vs bf16 | RTF | log-mel dist. dB | "
             "aligned dB | spectral SNR dB | waveform SNR dB | durations equal |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['disk_mb']:.1f} | {r['memory_mb']:.1f} | {percent_saved(r, f32)} | "
            f"{percent_saved(r, bf16)} | {r['rtf']:.2f} | {r['log_mel_db']:.2f} | {r['aligned_log_mel_db']:.2f} | "
            f"{r['spectral_snr_db']:.1f} | "
            f"{r['snr_db']:.1f} | {100 * r['durations_equal']:.0f}% |"
        )
    return lines


def csm_table(rows: dict) -> list:
    f32, bf16 = rows.get("float32"), rows.get("bfloat16")
    lines = ["| precision | disk MB | memory MB | saved vs f32 | saved vs bf16 | ms / frame | x real time | "
             "logits error |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['disk_mb']:.0f} | {r['memory_mb']:.0f} | {percent_saved(r, f32)} | "
            f"{percent_saved(r, bf16)} | {r['frame_ms']:.0f} | {r['frame_ms'] / FRAME_MS:.1f} | "
            f"{100 * r['logits_error']:.2f}% |"
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["kokoro", "csm"], choices=["kokoro", "csm"])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--group-size", type=int, default=64, choices=VALID_GROUP_SIZES)
    p.add_argument("--text", default=TEXT, help="Kokoro: the text to synthesize")
    p.add_argument("--voice", default="jf_alpha", help="Kokoro: an embedded voice")
    p.add_argument("--runs", type=int, default=3, help="Kokoro: timed takes per precision")
    p.add_argument("--frames", type=int, default=3, help="CSM: timed frames per precision")
    p.add_argument("--prompt", type=int, default=32, help="CSM: prompt positions")
    p.add_argument("--out", help="also write the tables to this markdown file")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "PRECISION", "SCRATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        model, precision, scratch = args.worker
        if model == "kokoro":
            row = kokoro_worker(precision, args.group_size, args.text, args.voice, args.runs, Path(scratch))
        else:
            row = csm_worker(precision, args.group_size, args.frames, args.prompt, Path(scratch))
        print(json.dumps(row))
        return
    # float32 first: its outputs are the quality reference
    precisions = ["float32"] + [x for x in args.precisions if x != "float32"]
    load_before = os.getloadavg()[0]
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench_quant-") as scratch:
        for model in args.models:
            rows = {}
            for precision in precisions:
                cmd = [sys.executable, __file__, "--worker", model, precision, scratch,
                       "--group-size", str(args.group_size), "--text", args.text, "--voice", args.voice,
                       "--runs", str(args.runs), "--frames", str(args.frames), "--prompt", str(args.prompt)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                if out.returncode:
                    sys.exit(f"{model} {precision}: worker failed\n{out.stderr}")
                rows[precision] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{model} {precision}: {rows[precision]}", file=sys.stderr)
            if model == "kokoro":
                audio_s = rows["float32"]["audio_s"]
                lines += [f"### Kokoro-82M (real weights), {audio_s:.1f} s of audio, median of {args.runs} takes", ""]
                lines += kokoro_table(rows)
            else:
                title = f"### CSM-1B (random weights), {args.frames} frames after a warm-up, prompt {args.prompt}"
                lines += [title, ""]
                lines += csm_table(rows)
            lines.append("")
    lines.append(f"Group size {args.group_size}. BLAS: {mlx_tts.accelerate().blas or 'reference (mlx-cpu wheel)'}; "
                 f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores.")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
