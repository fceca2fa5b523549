"""Batch throughput: audio seconds made per wall-clock second, for a dataset of short English rows.

    python bench/bench_batch.py                       # the plain loop, batch in process, Ray with 1 and 2 workers
    python bench/bench_batch.py --cluster             # and a simulated cluster: ray start --head, --address auto
    python bench/bench_batch.py --rows 24 --configs loop ray2

Every configuration runs in its own process, on the same rows, model (`--model`, default the embedded
Kokoro-82M offline), voice `--voice` (default `jf_alpha`) with American English G2P, seed 0, and reports
- wall: from before the model is loaded to the last file written (Ray: actors started, each loading its own
  model; Ray's own start, `ray.init`, is timed apart as "ray start");
- audio / wall: the throughput, audio seconds per wall second, startup included;
- first unit: when the first unit was done (what a user waits for before anything is ready);
- steady: audio seconds per wall second after the first unit, which leaves the startup out.
Configurations: `loop` (a bare `KokoroPipeline` loop, no batch machinery: the baseline), `inproc`
(`run_batch`, `--workers 1`), `ray1` and `ray2` (`run_batch` on 1 and 2 Ray actors of a local Ray, threads
per actor = CPUs / workers), and with `--cluster`, `cluster` (`ray start --head` on 127.0.0.1, the command
line with `--address auto --workers 2`, `ray stop`). The load average before and after is printed, since the
machine may be shared.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SENTENCES = [
    "The morning train was late again, and nobody on the platform seemed surprised.",
    "She folded the letter twice and put it in the pocket of her coat.",
    "A small dog barked at the gate until the postman walked away.",
    "We planted tomatoes along the fence, where the sun stays longest.",
    "The library opens at nine and closes early on Saturdays.",
    "He had never seen the sea before, and he stood there for an hour.",
    "Rain tapped on the window while the kettle began to sing.",
    "The old bridge was closed for repairs for most of the summer.",
    "Please remember to bring a pencil, a notebook and your questions.",
    "At the end of the street there is a bakery that sells warm bread.",
    "The children counted the stars until they fell asleep in the grass.",
    "Our neighbour plays the piano every evening after dinner.",
]
CONFIGS = ("loop", "inproc", "ray1", "ray2")


def write_rows(path: Path, rows: int) -> Path:
    lines = [json.dumps({"id": f"r{i:03d}", "text": SENTENCES[i % len(SENTENCES)]}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings(model, voice):
    from mlx_tts.batch import Settings

    return Settings(model=model, voice=voice, lang="a", seed=0)


def measure_one(config: str, rows_path: Path, model: str, voice: str) -> dict:
    """Run one configuration in this process; returns its figures."""
    import mlx_tts

    mlx_tts.accelerate()  # before mlx.core is imported: the CPU BLAS
    from mlx_tts.batch import run_batch
    from mlx_tts.longform_input import read_input

    units = read_input(rows_path).units
    done_at = []
    ray_start_s = None
    outdir = Path(tempfile.mkdtemp(prefix=f"bench_batch_{config}_"))
    if config.startswith("ray"):
        import logging

        import ray

        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        ray_start_s = time.perf_counter() - start
    start = time.perf_counter()
    if config == "loop":
        from mlx_tts.batch import unit_seed
        from mlx_tts.models.kokoro import KokoroPipeline
        from mlx_tts.take import kokoro_takes, last
        from mlx_tts.utils import load_model

        pipeline = KokoroPipeline("a", model=load_model(model))
        audio_s = 0.0
        for unit in units:
            audio_s += last(kokoro_takes(pipeline, unit.text, voice, seed=unit_seed(0, unit.id), words=False)).seconds
            done_at.append((time.perf_counter() - start, audio_s))
    else:
        workers = int(config[3:]) if config.startswith("ray") else 1

        def on_progress(state):
            if state.units_done:
                done_at.append((time.perf_counter() - start, state.audio_s))

        # Ray is already up in this process: run_batch joins that session (the address is then not used).
        summary = run_batch(rows_path, outdir, settings(model, voice), workers=workers,
                            address="auto" if config.startswith("ray") else None, progress=on_progress)
        assert summary.failed == 0, summary.describe()
        audio_s = summary.audio_s
    wall = time.perf_counter() - start
    shutil.rmtree(outdir, ignore_errors=True)
    first, first_audio = done_at[0]
    return {"config": config, "units": len(units), "audio_s": round(audio_s, 2), "wall_s": round(wall, 2),
            "throughput": round(audio_s / wall, 3), "first_unit_s": round(first, 2),
            "steady": round((audio_s - first_audio) / max(wall - first, 1e-9), 3),
            "ray_start_s": None if ray_start_s is None else round(ray_start_s, 2)}


def run_cluster(rows_path: Path, model: str, voice: str) -> dict:
    """`ray start --head` on 127.0.0.1, the command line with --address auto on 2 workers, then `ray stop`."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    outdir = Path(tempfile.mkdtemp(prefix="bench_batch_cluster_"))
    start = time.perf_counter()
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--num-cpus={os.cpu_count()}",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True)
    ray_start_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "mlx_tts.batch", str(rows_path), "-o", str(outdir), "--model",
                              model, "--voice", voice, "--lang", "a", "--workers", "2", "--address", "auto",
                              "--verbose"], cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    finally:
        subprocess.run([ray_bin, "stop"], capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(f"the cluster run failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-3000:]}")
    made = re.search(r"Made (\d+) of (\d+) units \(([\d.]+) s of audio\)", run.stdout)
    records = [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]
    workers = sorted({r["worker"] for r in records})
    shutil.rmtree(outdir, ignore_errors=True)
    audio_s = float(made[3])
    return {"config": "cluster", "units": int(made[2]), "audio_s": audio_s, "wall_s": round(wall, 2),
            "throughput": round(audio_s / wall, 3), "first_unit_s": None, "steady": None,
            "ray_start_s": round(ray_start_s, 2), "workers": workers}


def table(results: list) -> str:
    head = "| configuration | units | audio s | wall s | audio s / wall s | first unit s | steady | ray start s |"
    rows = [head, "|" + "---|" * 8]
    for r in results:
        cells = [r["config"], r["units"], r["audio_s"], r["wall_s"], r["throughput"], r["first_unit_s"], r["steady"],
                 r["ray_start_s"]]
        rows.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="prince-canuma/Kokoro-82M")
    p.add_argument("--voice", default="jf_alpha")
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--cluster", action="store_true", help="also run the simulated cluster")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    p.add_argument("--rows-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, Path(args.rows_file), args.model, args.voice)))
        return
    rows_path = write_rows(Path(tempfile.mkdtemp(prefix="bench_batch_")) / "rows.jsonl", args.rows)
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for config in args.configs:
        run = subprocess.run([sys.executable, __file__, "--one", config, "--rows-file", str(rows_path), "--model",
                              args.model, "--voice", args.voice], capture_output=True, text=True, cwd=REPO)
        if run.returncode != 0:
            raise RuntimeError(f"{config} failed:\n{run.stderr[-3000:]}")
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.cluster:
        results.append(run_cluster(rows_path, args.model, args.voice))
        print(json.dumps(results[-1]), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(table(results))


if __name__ == "__main__":
    main()
