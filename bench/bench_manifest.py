"""What the model-folder manifests cost, on the embedded Kokoro-82M (325 MB of float32 weights).

    python bench/bench_manifest.py --runs 5

Times, each the median of `--runs`: writing the manifest (hashing every file), a verification that hashes
(the first load after a file changed), a verification from the recorded stamps (every other load), and
`load_model` of the folder with its verification, against reading the weights alone (`load_mlx_folder`).
The page cache is warm for all of them (one untimed pass first), as on every load but the first after boot.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: it loads the CPU BLAS

from mlx_tts import manifest  # noqa: E402
from mlx_tts.utils import EMBEDDED_MODEL, load_mlx_folder, load_model, resolve_model_path  # noqa: E402


def median_s(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forget_stamps(folder: Path):
    manifest._stamps_path(folder).unlink(missing_ok=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    folder = resolve_model_path(EMBEDDED_MODEL)
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    load_model(EMBEDDED_MODEL)  # warm the page cache and record the stamps

    def verify_hashing():
        forget_stamps(folder)
        manifest.verify_manifest(folder)

    rows = [
        ("write the manifest (hash every file)", median_s(lambda: manifest.write_manifest(folder), args.runs)),
        ("verify, hashing (first load after a change)", median_s(verify_hashing, args.runs)),
        ("verify from the stamps (other loads)", median_s(lambda: manifest.verify_manifest(folder), args.runs)),
        ("load_model, verification included", median_s(lambda: load_model(EMBEDDED_MODEL), args.runs)),
        ("load_mlx_folder, no verification", median_s(lambda: load_mlx_folder(folder), args.runs)),
    ]
    print(f"{folder} ({size_mb:.0f} MB), median of {args.runs}")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
