"""Per-op speed of Kokoro's decoder convolutions on the CPU: MLX's own vs ours vs PyTorch.

    python bench/bench_ops.py                 # shapes for 3 s of audio, every implementation
    python bench/bench_ops.py --seconds 10 --skip-mlx --repeats 9

Rows are the distinct convolutions of Kokoro's iSTFTNet generator (upsamplers, resblock convs, noise convs,
conv_post) at the lengths they have for `--seconds` of audio, plus float32 GEMM / GEMV rows for the BLAS.
Columns are GFLOP/s (2 * MACs / median time): `mlx` = mx.conv1d / mx.conv_transpose1d, `kernel` = our
native primitive, `mlx-ops` = our MLX-op rewrite, `torch` = PyTorch (oneDNN) with as many threads as cores.
The last row totals the time of all 53 generator convolutions (each shape weighted by how often it occurs).
Then the generator's Snake and fused AdaIN + Snake (milliseconds) at its two sizes.
Run with MLX_TTS_BLAS=off to see MLX on the reference BLAS of the mlx-cpu wheel.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: it loads the CPU BLAS

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_tts import activations, conv, ext  # noqa: E402


def generator_convs(seconds: float):
    """(name, kind, batch shape, c_in, c_out, kernel, stride, padding, dilation/output_padding, count)."""
    frames = round(seconds * 24000 / 300)  # generator input rate: 80 frames/s
    t1, t2 = frames * 10, frames * 60  # after the x10 and x6 upsamplers
    rows = [("up1 512>256 k20 s10", "T", frames, 512, 256, 20, 10, 5, 0, 1)]
    for stage, (c, t, noise_k) in enumerate([(256, t1, 7), (128, t2, 11)], start=1):
        for k in (3, 7, 11):
            for d in (1, 3, 5):
                # Each resblock: 3 dilated convs + 3 with dilation 1; the noise resblock adds one more kernel.
                count = (1 + (d == 1) * 3) * (1 + (k == noise_k))
                rows.append((f"res{stage} C{c} k{k} d{d}", "C", t, c, c, k, 1, d * (k - 1) // 2, d, count))
        if stage == 1:
            rows.append(("noise1 22>256 k12 s6", "C", t2 + 1, 22, 256, 12, 6, 3, 1, 1))
            rows.append(("up2 256>128 k12 s6", "T", t1, 256, 128, 12, 6, 3, 0, 1))
    rows.append(("noise2 22>128 k1", "C", t2 + 1, 22, 128, 1, 1, 0, 1, 1))
    rows.append(("conv_post 128>22 k7", "C", t2, 128, 22, 7, 1, 3, 1, 1))
    return rows


def median_times(runners: dict, repeats: dict) -> dict:
    """Median seconds of each runner; repeats go round-robin so that a busy spell on the machine (other
    processes share these cores) hits every column alike."""
    for run in runners.values():
        run()  # warm-up (and first-use build)
    times = {name: [] for name in runners}
    for round_ in range(max(repeats.values())):
        for name, run in runners.items():
            if round_ < repeats[name]:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def mlx_runner(path: str, kind, x, w, stride, padding, extra):
    choice = {"kernel": "auto", "mlx-ops": "mlx-ops", "mlx": "mlx"}[path]
    op = conv.conv_transpose1d if kind == "T" else conv.conv1d

    def run():
        os.environ["MLX_TTS_CONV"] = choice
        mx.eval(op(x, w, None, stride, padding, extra))

    return run


def torch_runner(kind, x, w, stride, padding, extra):
    import torch

    xt = torch.from_numpy(np.array(x)).transpose(1, 2).contiguous()
    if kind == "T":
        wt = torch.from_numpy(np.array(w)).permute(2, 0, 1).contiguous()  # [C_in, C_out, K]
        fn = lambda: torch.nn.functional.conv_transpose1d(xt, wt, None, stride, padding, extra)  # noqa: E731
    else:
        wt = torch.from_numpy(np.array(w)).transpose(1, 2).contiguous()  # [C_out, C_in, K]
        fn = lambda: torch.nn.functional.conv1d(xt, wt, None, stride, padding, extra)  # noqa: E731

    def run():
        with torch.inference_mode():
            fn()

    return run


def activation_rows(seconds: float, repeats: int, with_torch: bool):
    """Snake and the fused AdaIN + Snake in front of every resblock conv, at the generator's two sizes."""
    columns = ["kernel ms", "mlx ms"] + ["torch ms"] * with_torch
    print("\n| op | shape | " + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns))
    frames = round(seconds * 24000 / 300)
    for t, c in [(frames * 10, 256), (frames * 60, 128)]:
        x, alpha = mx.random.normal((1, t, c)), mx.random.uniform(0.5, 2.0, (c,))
        gamma, beta = mx.random.normal((1, c)) * 0.1, mx.random.normal((1, c)) * 0.1
        mx.eval(x, alpha, gamma, beta)
        ops = {
            "Snake": {
                "kernel": lambda: mx.eval(activations.snake(x, alpha)),
                "mlx": lambda: mx.eval(activations._snake_mlx(x, alpha)),
            },
            "AdaIN + Snake": {
                "kernel": lambda: mx.eval(activations.adain_snake(x, gamma, beta, alpha)),
                "mlx": lambda: mx.eval(activations._snake_mlx(activations._adain_mlx(x, gamma, beta, 1e-5), alpha)),
            },
        }
        if with_torch:
            import torch

            xt = torch.from_numpy(np.array(x)).transpose(1, 2).contiguous()
            at = torch.from_numpy(np.array(alpha))[None, :, None]
            gt, bt = (torch.from_numpy(np.array(v))[:, :, None] for v in (gamma, beta))
            norm = torch.nn.InstanceNorm1d(c)
            ops["Snake"]["torch"] = lambda: xt + (1 / at) * torch.sin(at * xt) ** 2
            ops["AdaIN + Snake"]["torch"] = lambda: (lambda v: v + (1 / at) * torch.sin(at * v) ** 2)(
                (1 + gt) * norm(xt) + bt
            )
        for name, runners in ops.items():
            seconds_each = median_times(runners, dict.fromkeys(runners, repeats))
            print(f"| {name} | [{t}, {c}] | " + " | ".join(f"{v * 1e3:.2f}" for v in seconds_each.values()) + " |")


def gemm_rows(repeats: int):
    print("\n| GEMM float32 (M x K x N) | GFLOP/s | ms |\n|---|---|---|")
    for m, k, n in [(2048, 2048, 2048), (14400, 128, 128), (14400, 1408, 128), (1, 2048, 8192), (8, 2048, 2048)]:
        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)
        seconds = median_times({"gemm": lambda: mx.eval(a @ b)}, {"gemm": repeats})["gemm"]
        print(f"| {m} x {k} x {n} | {2 * m * k * n / seconds / 1e9:.1f} | {seconds * 1e3:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="audio length that sets the shapes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-mlx", action="store_true", help="skip MLX's own mx.conv1d (seconds per dilated conv)")
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    paths = ["kernel"] if ext.cpu_kernels() is not None else []
    paths += ["mlx-ops"] + ([] if args.skip_mlx else ["mlx"])
    columns = paths + ([] if args.skip_torch else ["torch"])
    blas = mlx_tts.accelerate().blas or "reference (mlx-cpu wheel)"
    print(f"BLAS: {blas}; native kernel: {ext.cpu_kernels() is not None}")
    print(f"Kokoro generator convolutions for {args.seconds:g} s of audio; GFLOP/s (higher is better)\n")
    print("| op | T in | GFLOP | count | " + " | ".join(columns) + " |")
    print("|---|---|---|---|" + "---|" * len(columns))
    totals = dict.fromkeys(columns, 0.0)
    mx.random.seed(0)
    for name, kind, t, c_in, c_out, k, stride, padding, extra, count in generator_convs(args.seconds):
        x = mx.random.normal((1, t, c_in))
        w = mx.random.normal((c_out, k, c_in)) * (c_in * k) ** -0.5
        mx.eval(x, w)
        if kind == "T":
            t_out = (t - 1) * stride - 2 * padding + k + extra
        else:
            t_out = (t + 2 * padding - extra * (k - 1) - 1) // stride + 1
        flops = 2 * (t if kind == "T" else t_out) * c_in * c_out * k
        runners = {
            column: torch_runner(kind, x, w, stride, padding, extra)
            if column == "torch"
            else mlx_runner(column, kind, x, w, stride, padding, extra)
            for column in columns
        }
        repeats = {column: 1 if column == "mlx" else args.repeats for column in columns}
        seconds = median_times(runners, repeats)
        cells = []
        for column in columns:
            totals[column] += seconds[column] * count
            cells.append(f"{flops / seconds[column] / 1e9:.1f}")
        print(f"| {name} | {t} | {flops / 1e9:.2f} | {count} | " + " | ".join(cells) + " |")
    print("| **all 53 convs, seconds** | | | | " + " | ".join(f"**{totals[c]:.3f}**" for c in columns) + " |")
    if ext.cpu_kernels() is not None:
        activation_rows(args.seconds, args.repeats, not args.skip_torch)
    gemm_rows(args.repeats)


if __name__ == "__main__":
    main()
