"""Speed and memory of CSM-1B generation on this machine: random weights, the real architecture.

    python bench/bench_csm.py                       # float32, bfloat16, 8, 6, 5, 4, 3 and 2 bits; 8 frames each
    python bench/bench_csm.py --frames 3 --precisions float32 4bit

Each precision runs in its own process (so that its peak RSS is its own): build the model (the Mimi codec
stays float32, as the quantization recipes keep it), a `--prompt`-position text prompt, then `--warmup` + `--frames`
generated frames (80 ms of audio each). Per frame: one backbone step and one depth-decoder pass (31 steps),
timed apart. Reports ms per frame (backbone, decoder, total), the real-time factor (frame time / 80 ms)
and peak RSS. Sampling is temperature 0.9, top-k 50, seeded.

The memory-bandwidth floor: a frame reads the backbone's layers once and, 31 times, the decoder's layers,
the projection and one audio head; the bytes of those weights in each precision, divided by this machine's read
bandwidth (measured here: two threads summing a 512 MB array), is the least time a frame could take. The table
gives both floors (backbone, decoder) beside the measured times.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: it loads the CPU BLAS

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_tts.memory import peak_rss_mb  # noqa: E402
from mlx_tts.models import csm  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "8bit", "6bit", "5bit", "4bit", "3bit", "2bit")
FRAME_MS = 80


def build_model(precision: str) -> csm.Model:
    mx.random.seed(0)
    model = csm.Model(csm.ModelArgs())  # CSM-1B: llama-1B backbone, llama-100M decoder, kyutai's Mimi
    model.audio_head = mx.random.normal(model.audio_head.shape) * 0.02
    if precision == "bfloat16":
        model.set_dtype(mx.bfloat16)
        model.codec.set_dtype(mx.float32)
    elif precision.endswith("bit"):
        nn.quantize(model, group_size=64, bits=int(precision[:-3]),
                    class_predicate=lambda path, m: hasattr(m, "to_quantized") and not path.startswith("codec."))
    mx.eval(model.parameters())  # the random weights are drawn here, already in their final precision
    return model


def read_bandwidth_gb_s(megabytes: int = 512) -> float:
    """Bytes per second (in GB) that two threads read from memory, summing halves of a large array."""
    import threading

    import numpy as np

    data = np.ones(megabytes * 2**20 // 4, np.float32)
    halves = np.array_split(data, 2)
    best = float("inf")
    for _ in range(3):
        threads = [threading.Thread(target=np.add.reduce, args=(half,)) for half in halves]  # releases the GIL
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def weight_bytes(module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(module.parameters()))


def bytes_per_frame(model) -> tuple:
    """(backbone, decoder) bytes of weights that one frame reads."""
    steps = model.args.audio_num_codebooks - 1
    head = model.audio_head[0].nbytes
    return weight_bytes(model.backbone), steps * (weight_bytes(model.decoder) + weight_bytes(model.projection) + head)


def run_worker(precision: str, frames: int, warmup: int, prompt: int) -> dict:
    start = time.perf_counter()
    model = build_model(precision)
    build_s = time.perf_counter() - start
    args = model.args
    tokens = mx.zeros((1, prompt, args.audio_num_codebooks + 1), mx.int32)
    tokens[..., -1] = mx.random.randint(0, args.text_vocab_size, (1, prompt))
    mask = mx.zeros(tokens.shape, mx.bool_)
    mask[..., -1] = True
    sampler = csm.make_sampler(0.9, 50, seed=0)
    cache = model.backbone.make_cache()
    decoder_cache = model.decoder.make_cache(step=args.audio_num_codebooks + 1)

    start = time.perf_counter()
    hidden = model.backbone(model.embed_frames(tokens, mask), cache)[:, -1]
    mx.eval(hidden)
    prefill_s = time.perf_counter() - start
    backbone, decoder = [], []
    for _ in range(warmup + frames):
        t0 = time.perf_counter()
        frame = model.decode_frame(hidden, sampler, decoder_cache)
        mx.eval(frame)
        t1 = time.perf_counter()
        hidden = model.backbone(model.embed_codes(frame), cache)[:, -1]
        mx.eval(hidden)
        t2 = time.perf_counter()
        decoder.append(t1 - t0)
        backbone.append(t2 - t1)
    backbone_ms = 1000 * statistics.mean(backbone[warmup:])
    decoder_ms = 1000 * statistics.mean(decoder[warmup:])
    backbone_bytes, decoder_bytes = bytes_per_frame(model)
    return dict(backbone_mb=backbone_bytes / 1e6, decoder_mb=decoder_bytes / 1e6,
        precision=precision, frames=frames, prompt=prompt, build_s=build_s, prefill_s=prefill_s,
        backbone_ms=backbone_ms, decoder_ms=decoder_ms, frame_ms=backbone_ms + decoder_ms,
        rtf=(backbone_ms + decoder_ms) / FRAME_MS, peak_rss_mb=peak_rss_mb(),
        peak_mlx_mb=mx.get_peak_memory() / 2**20, blas=mlx_tts.accelerate().blas or "reference (mlx-cpu wheel)",
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--frames", type=int, default=8, help="timed frames per precision")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames first")
    p.add_argument("--prompt", type=int, default=64, help="prompt positions before the first frame")
    p.add_argument("--worker", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.frames, args.warmup, args.prompt)))
        return
    load_before = os.getloadavg()
    bandwidth = read_bandwidth_gb_s()
    rows = []
    for precision in args.precisions:
        cmd = [sys.executable, __file__, "--worker", precision, "--frames", str(args.frames),
               "--warmup", str(args.warmup), "--prompt", str(args.prompt)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if out.returncode:
            sys.exit(f"{precision}: worker failed\n{out.stderr}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{precision}: {r['frame_ms']:.0f} ms/frame", file=sys.stderr)
    print(f"CSM-1B, random weights, {args.frames} frames after {args.warmup} warm-up, prompt {args.prompt}; "
          f"BLAS: {rows[0]['blas']}; load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after, on {os.cpu_count()} cores; read bandwidth "
          f"{bandwidth:.1f} GB/s\n")
    print("| precision | backbone ms | floor | decoder ms | floor | frame ms | x real time | prefill s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        floor_backbone, floor_decoder = (r[f"{part}_mb"] / bandwidth for part in ("backbone", "decoder"))
        print(f"| {r['precision']} | {r['backbone_ms']:.0f} | {floor_backbone:.0f} | {r['decoder_ms']:.0f} | "
              f"{floor_decoder:.0f} | {r['frame_ms']:.0f} | {r['rtf']:.1f} | {r['prefill_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
