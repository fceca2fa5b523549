"""The README's quick start, checked as a newcomer would run it: `.ci/run` calls this with the Python of a fresh
venv that has `requirements.txt` alone. It starts `python app.py` on a free port, waits for HTTP 200, makes one
Kokoro take with the page's defaults through `gradio_client`, checks it is speech-like, and stops the server.
"""

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from gradio_client import Client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from studio_server import log_tail, running_studio  # noqa: E402


def main():
    if importlib.util.find_spec("torch") is not None:
        sys.exit("requirements.txt installed torch: the studio must run without it")
    with tempfile.TemporaryDirectory(prefix="mlx_tts_quickstart_") as work:
        work = Path(work)
        start = time.monotonic()
        with running_studio(work) as url:
            up = time.monotonic()
            try:
                take, _, _, chunks, stats = Client(url, verbose=False).predict(api_name="/kokoro_generate")
            except Exception:
                print(log_tail(work / "server.log"), file=sys.stderr)
                raise
            done = time.monotonic()
        audio, rate = sf.read(take, dtype="float32")
    seconds = len(audio) / rate
    rms = float(np.sqrt(np.mean(audio**2))) if len(audio) else 0.0
    words = sum(len(row[1].split()) for row in chunks["data"])
    print(f"quick start: HTTP 200 after {up - start:.1f} s; first Kokoro take ({seconds:.2f} s of audio, "
          f"{words} words) after {done - up:.1f} s more")
    assert rate == 24000, rate
    assert rms > 0.005, f"the take is silent (RMS {rms:.4f})"
    # Speech runs at roughly 1.5 to 4 words a second.
    assert words / 4 < seconds < words / 1.5 + 1, f"{seconds:.2f} s of audio for {words} words"
    assert "does not match" not in stats, stats  # the default text and language agree


if __name__ == "__main__":
    main()
