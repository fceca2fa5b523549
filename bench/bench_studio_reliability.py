"""Reliability figures of the studio (issue #11), through `gradio_client` against `python app.py` on loopback.

1. Load: 6 concurrent clients x 3 Kokoro generations of two sentences (18 different texts): failures, each
   take's duration against a solo run of the same text (same seed), total time.
2. Soak: 60 consecutive generations of varied text; the server's RSS every 10 calls, growth from call 10 to 60.
3. Crash: `kill -9` of the server mid-generation, then a restart and a generation.
4. Cache fault: a truncated weights file in the (private copy of the) converted-model cache, then a restart
   and a generation: a clear error, a rebuild, or (the failure this looks for) audio from broken weights.
5. Reproducibility: the same text, voice and seed twice give identical samples.
6. Oversized uploads (issue #20): ten 1 MB `.pt` voices declaring 1,000,000 rows (1 GB unpacked), each uploaded
   through `/gradio_api/upload` and passed as the voice of a generation; the server's RSS before and after.

Run: `python bench/bench_studio_reliability.py` (minutes on 2 shared cores). It uses a private model cache
(a copy of the embedded model) so that the fault it injects touches nothing else.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from gradio_client import Client
from gradio_client.utils import Status

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from mlx_tts.cache import cache_dir  # noqa: E402

from studio_server import start_studio, stop_studio  # noqa: E402
from voice_files import write_torch_style_pt  # noqa: E402

VOICE, LANG = "jf_alpha", "a"
SUBJECTS = ["The river", "A small cat", "The old train", "My neighbour", "The market", "A paper kite", "The lighthouse",
            "Our teacher", "The garden", "A quiet road", "The bakery", "The museum", "A red bicycle", "The library",
            "The harbour", "A tall tree", "The night bus", "The school bell"]
ACTIONS = ["wakes up early", "waits by the door", "hums a song", "looks at the sky", "turns to the left",
           "counts to ten"]


def two_sentences(i: int) -> str:
    return (f"{SUBJECTS[i % len(SUBJECTS)]} {ACTIONS[i % len(ACTIONS)]} every morning. "
            f"Then it {ACTIONS[(i + 3) % len(ACTIONS)]} before noon number {i}.")


def generate(client, text, seed=0):
    take, *_ = client.predict(text=text, voice=VOICE, lang_code=LANG, seed=seed, api_name="/kokoro_generate")
    audio, rate = sf.read(take, dtype="float32")
    return audio, rate


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def load_test(url, report):
    texts = [two_sentences(i) for i in range(18)]
    client = Client(url, verbose=False)
    solo, start = {}, time.perf_counter()
    for text in texts:
        audio, rate = generate(client, text)
        solo[text] = len(audio) / rate
    solo_s = time.perf_counter() - start
    results, failures = {}, []

    def worker(k):
        own = Client(url, verbose=False, httpx_kwargs={"timeout": 600})
        for text in texts[3 * k: 3 * k + 3]:
            try:
                audio, rate = generate(own, text)
                results[text] = len(audio) / rate
            except Exception as e:  # counted, not raised: the figure is how many fail
                failures.append(f"{text!r}: {e}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total_s = time.perf_counter() - start
    deviation = max(abs(results[t] / solo[t] - 1) for t in results) if results else None
    report["load"] = {"clients": 6, "generations": 18, "failures": len(failures), "failure_messages": failures[:3],
                      "max_duration_deviation_vs_solo": deviation, "concurrent_total_s": round(total_s, 1),
                      "solo_total_s": round(solo_s, 1)}


def soak_test(url, pid, report):
    client = Client(url, verbose=False)
    samples = {}
    for call in range(1, 61):
        generate(client, two_sentences(100 + call) + " " + two_sentences(call * 7))
        if call % 10 == 0:
            samples[call] = round(rss_mb(pid), 1)
            print(f"  soak call {call}: RSS {samples[call]} MB", flush=True)
    report["soak"] = {"rss_mb_every_10": samples, "growth_10_to_60": round(samples[60] / samples[10] - 1, 4)}


def crash_test(work_dir, args, env, report):
    server, url = start_studio(work_dir, *args, env=env, log_name="crash.log")
    client = Client(url, verbose=False)
    job = client.submit(text=" ".join(two_sentences(i) for i in range(12)), voice=VOICE, lang_code=LANG, seed=0,
                        api_name="/kokoro_generate")
    while job.status().code != Status.PROCESSING:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the generation
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    start = time.perf_counter()
    server, url = start_studio(work_dir, *args, env=env, log_name="restart.log")
    up_s = time.perf_counter() - start
    try:
        audio, rate = generate(Client(url, verbose=False), two_sentences(3))
        report["crash"] = {"killed_mid_generation": True, "restart_s": round(up_s, 1),
                           "first_generation_ok": bool(len(audio) > rate // 2 and np.abs(audio).max() > 0.01)}
    finally:
        stop_studio(server)


def cache_fault_test(work_dir, args, env, report):
    """Truncate the biggest weights file of the model in the private cache, restart, and generate."""
    cache = Path(env["MLX_TTS_CACHE"])
    weights = max((p for p in cache.rglob("*.safetensors") if not p.is_symlink()), key=lambda p: p.stat().st_size)
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    outcome = {"file": str(weights.relative_to(cache)), "size_before": size, "size_after": size // 2}
    try:
        server, url = start_studio(work_dir, *args, env=env, log_name="fault.log")
    except RuntimeError as e:
        outcome["startup"] = f"refused to start: {str(e)[-300:]}"
        report["cache_fault"] = outcome
        return
    try:
        client = Client(url, verbose=False)
        try:
            outcome["load_status"] = client.predict(api_name="/kokoro_load")[2][:300]
        except Exception as e:  # the outcome is the figure
            outcome["load_error"] = str(e)[:400]
        try:
            audio, rate = generate(client, two_sentences(5))
            outcome["generation"] = {"seconds": round(len(audio) / rate, 2), "peak": float(np.abs(audio).max()),
                                     "finite": bool(np.isfinite(audio).all())}
        except Exception as e:
            outcome["generation_error"] = str(e)[:400]
        outcome["size_now"] = weights.stat().st_size if weights.exists() else None
    finally:
        stop_studio(server)
    log = (work_dir / "fault.log").read_text(errors="replace")
    outcome["log_lines_naming_the_file"] = [line[:400] for line in log.splitlines() if weights.name in line][:3]
    report["cache_fault"] = outcome


def uploads_test(url, pid, work_dir, report):
    """Ten oversized voice uploads, each refused by its header; RSS must stay where it was."""
    client = Client(url, verbose=False)
    generate(client, two_sentences(1))  # model, voices and G2P loaded: the RSS to compare with
    before = rss_mb(pid)
    huge = write_torch_style_pt(work_dir / "huge.pt", 1_000_000)
    after, refusals = [], []
    for i in range(10):
        with open(huge, "rb") as f:
            response = httpx.post(f"{url}gradio_api/upload", files={"files": (f"voice{i}.pt", f)}, timeout=60)
        response.raise_for_status()
        try:
            client.predict(text=two_sentences(2), voice=response.json()[0], lang_code=LANG, seed=0,
                           api_name="/kokoro_generate")
            refusals.append("accepted")
        except Exception as e:  # the refusal is the figure
            refusals.append(str(e)[:160])
        after.append(round(rss_mb(pid), 1))
    report["uploads"] = {"upload_mb": round(huge.stat().st_size / 2**20, 2), "rss_before_mb": round(before, 1),
                         "rss_after_each_mb": after, "growth_mb": round(after[-1] - before, 1),
                         "refusal": refusals[0], "all_refused": "accepted" not in refusals}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--parts", default="load,soak,uploads,crash,fault", help="which figures (comma list)")
    options = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="bench_studio_"))
    private_cache = work_dir / "cache"
    shutil.copytree(cache_dir() / "embedded", private_cache / "embedded", symlinks=True)
    if (cache_dir() / "ext").exists():  # the compiled kernels: read only, shared
        (private_cache / "ext").symlink_to(cache_dir() / "ext")
    env = {"MLX_TTS_CACHE": str(private_cache)}
    args = ("--output-dir", str(work_dir / "out"))
    report, parts = {}, options.parts.split(",")
    if {"load", "soak", "uploads"} & set(parts):
        server, url = start_studio(work_dir, *args, env=env)
        try:
            if "load" in parts:
                print("load test", flush=True)
                load_test(url, report)
                client = Client(url, verbose=False)
                a, _ = generate(client, two_sentences(42), seed=1234)
                b, _ = generate(client, two_sentences(42), seed=1234)
                report["reproducible"] = {"same_samples": bool(len(a) == len(b) and np.array_equal(a, b)),
                                          "samples": len(a)}
                print(json.dumps(report["load"]), json.dumps(report["reproducible"]), flush=True)
            if "soak" in parts:
                print("soak test", flush=True)
                soak_test(url, server.pid, report)
            if "uploads" in parts:
                print("oversized uploads", flush=True)
                uploads_test(url, server.pid, work_dir, report)
                print(json.dumps(report["uploads"]), flush=True)
        finally:
            stop_studio(server)
    if "crash" in parts:
        print("crash test", flush=True)
        crash_test(work_dir, args, env, report)
        print(json.dumps(report["crash"]), flush=True)
    if "fault" in parts:
        print("cache fault test", flush=True)
        cache_fault_test(work_dir, args, env, report)
    print(json.dumps(report, indent=2))
    if options.out:
        options.out.write_text(json.dumps(report, indent=2))
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
