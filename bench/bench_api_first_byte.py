"""Time to the first audio bytes of the OpenAI-compatible speech API, streamed and not, on this machine.

    python bench/bench_api_first_byte.py                     # a paragraph, pcm/mp3/opus/wav, 3 runs each
    python bench/bench_api_first_byte.py --formats mp3 --runs 5

Starts `python app.py` on a free port (the embedded Kokoro, Hub off), warms it up with one request, then per
format posts `{"model": "tts-1", "voice": "jf_alpha", "input": <paragraph>, "stream": true}` and times the first
non-empty body chunk and the last one; then the same request unstreamed. Then, with the server stopped, the
pipeline's own first streamed chunk in this process (what the API adds is the difference), and how long
playback started with it would wait for later chunks (the stall). Prints a markdown table of medians and the
machine's load average (other processes on a 2-core machine slow every figure).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import mlx_tts  # noqa: E402

mlx_tts.accelerate()  # before mlx.core: this process runs the pipeline too

from mlx_tts.models.kokoro.pipeline import STREAM_FIRST_CHUNK  # noqa: E402

from studio_server import running_studio  # noqa: E402

PARAGRAPH = (
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー"
    "泣いていた事だけは記憶している。吾輩はここで始めて人間というものを見た。しかもあとで聞くとそれは書生という"
    "人間中で一番獰悪な種族であったそうだ。"
)


def timed_request(client: httpx.Client, url: str, body: dict) -> tuple:
    """(seconds to the first non-empty chunk, seconds to the end, bytes)."""
    start = time.perf_counter()
    first, size = None, 0
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for piece in response.iter_raw():
            if piece and first is None:
                first = time.perf_counter() - start
            size += len(piece)
    return first, time.perf_counter() - start, size


def pipeline_stream(text: str, voice: str, runs: int) -> tuple:
    """Medians, in this process, of the seconds to the pipeline's first streamed chunk (evaluated) and of the
    listener's stall: the seconds that playback, started at the first chunk, waits for later chunks."""
    import mlx.core as mx

    from mlx_tts.models.kokoro import KokoroPipeline
    from mlx_tts.utils import DEFAULT_MODEL, load_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the same model as the server's (the embedded one offline)
    pipeline = KokoroPipeline(voice[0], model=load_model(DEFAULT_MODEL))
    _ = pipeline.g2p  # built before timing, as the server builds it before its first request
    firsts, stalls = [], []
    for _ in range(runs + 1):  # the first run warms up
        start = time.perf_counter()
        first, played, stall = None, 0.0, 0.0
        for result in pipeline(text, voice=voice, first_chunk_max=STREAM_FIRST_CHUNK):
            mx.eval(result.audio)
            now = time.perf_counter() - start
            first = now if first is None else first
            stall += max(0.0, now - (first + played + stall))  # playback ran dry before this chunk came
            played += result.duration_s
        firsts.append(first)
        stalls.append(stall)
    return statistics.median(firsts[1:]), statistics.median(stalls[1:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", nargs="+", default=["pcm", "mp3", "opus", "wav"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--text", default=PARAGRAPH)
    p.add_argument("--voice", default="jf_alpha")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as work, running_studio(Path(work)) as server:
        url = server + "v1/audio/speech"
        with httpx.Client(timeout=600) as client:
            base = {"model": "tts-1", "voice": args.voice, "input": args.text}
            timed_request(client, url, {**base, "response_format": "pcm", "stream": True})  # warm-up
            rows = []
            for fmt in args.formats:
                for stream in (True, False):
                    runs = [timed_request(client, url, {**base, "response_format": fmt, "stream": stream})
                            for _ in range(args.runs)]
                    rows.append((fmt, stream, *(statistics.median(r[i] for r in runs) for i in range(3))))
    in_process, stall = pipeline_stream(args.text, args.voice, args.runs)
    audio_s = next((size / 2 / 24000 for fmt, _, _, _, size in rows if fmt == "pcm"), None)
    speech = f"{audio_s:.1f} s of speech, " if audio_s else ""
    print(f"\n{len(args.text)} characters, {speech}voice {args.voice}, {args.runs} runs each, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs\n")
    print("| format | stream | first bytes (s) | whole response (s) | bytes |")
    print("|---|---|---|---|---|")
    for fmt, stream, first, total, size in rows:
        print(f"| {fmt} | {'yes' if stream else 'no'} | {first:.2f} | {total:.2f} | {size:.0f} |")
    print(f"\nThe pipeline's first streamed chunk in process: {in_process:.2f} s; playback started then waits "
          f"{stall:.2f} s in all for later chunks")


if __name__ == "__main__":
    main()
