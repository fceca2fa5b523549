"""Batch and long-form synthesis: `python -m mlx_tts.batch INPUT -o OUTDIR`.

INPUT is a book (.txt, .md, .epub: one unit per chapter) or a dataset (.csv, .jsonl of `id,text[,voice,lang]`
rows: one unit per row); see `mlx_tts.longform_input`. Each unit becomes one audio file in OUTDIR and one line
of OUTDIR/manifest.jsonl (id, text, voice, seconds, sample rate, file, sha256, or the unit's error). A book
also gets book.<format> (the chapters joined, with a pause between them), chapters.json (where each chapter
starts and ends in it) and book.srt (short captions timed word by word, as `mlx_tts.captions` makes them).

Execution: `--workers 1` (the default) runs in this process. `--workers N` starts N Ray actors, each with
its own loaded model and `MLX_TTS_THREADS` threads (N x threads <= the CPUs Ray sees); `--address auto`
joins a running Ray cluster instead of starting a local one. Both paths run the same `UnitWorker.run` on
each unit. Without Ray installed, `--workers N` runs in process (with a warning).

Resuming: unit files are written to a temporary name and renamed, and each unit's manifest line is appended
(and flushed) as it finishes. A rerun of the same command skips every unit whose manifest line has the same
key (a hash of its text and the settings that shape its audio) and whose file still has the recorded
sha256, so a kill -9 or a lost worker costs at most the units in flight. A unit that fails (empty text,
unknown voice, a crashed worker) is recorded with its error, the others go on, and the next run retries it.
Exit status: 0 when every unit is done, else the number of failed units (at most 100); 101 when the run
could not start (unreadable input, a model that does not load).
"""

if __name__ == "__main__":  # the command line: set up the process before the imports below load mlx.core
    import mlx_tts

    mlx_tts.accelerate()

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import soundfile as sf

from . import DEFAULT_MODEL, accelerate, captions  # none loads MLX: an actor's process sets itself up first
from .audio import SAMPLE_RATE, AudioStreamEncoder, encode_audio
from .errors import MlxTtsError
from .longform_input import SUFFIXES, InputError, Unit, file_stem, read_input

logger = logging.getLogger("mlx_tts")

FORMATS = ("wav", "flac", "mp3")
MANIFEST = "manifest.jsonl"
BOOK = "book"  # book.<format>, book.srt
CHAPTERS = "chapters.json"
PARTIAL = ".partial"  # suffix of files being written; left over only by a killed run
MP3_BIT_RATE = 64000  # mono speech at 24 kHz
CHAPTER_GAP_S = 1.5
ACTOR_RESTARTS = 3  # a Ray actor that dies is restarted (model reloaded) this many times
MAX_FAILED_STATUS = 100
NOT_STARTED_STATUS = 101


class NotStarted(MlxTtsError, RuntimeError):
    """The run could not begin: no worker could load the model, or Ray could not start."""


@dataclass(frozen=True)
class Settings:
    """What shapes the audio of every unit (a unit's own voice or lang, in a dataset, overrides these)."""

    model: str = DEFAULT_MODEL
    voice: Optional[str] = None  # None: the model's first voice
    lang: str = "a"
    speed: float = 1.0
    format: str = "wav"
    seed: int = 0
    split_pattern: Optional[str] = r"\n+"

    def unit_key(self, unit: Unit) -> str:
        """A hash of the unit's text and everything that changes its file: equal keys, equal audio."""
        shaping = {**asdict(self), "voice": unit.voice or self.voice, "lang": unit.lang or self.lang,
                   "text": unit.text}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def unit_seed(seed: int, unit_id: str) -> int:
    """Each unit's own seed, so that its audio does not depend on which worker made it, or in what order."""
    return zlib.crc32(unit_id.encode(), seed & 0xFFFFFFFF)


# ---- audio files ---------------------------------------------------------------------------------------


class AudioSink:
    """Mono float audio written piece by piece to a path or a file object: 16-bit WAV or FLAC through
    soundfile (with their lengths in the header), MP3 through the engine's PyAV stream encoder."""

    def __init__(self, target, sample_rate: int, format: str):
        if format not in FORMATS:
            raise InputError(f"unknown audio format {format!r}; choose one of {', '.join(FORMATS)}")
        self.format = format
        if format == "mp3":
            self._encoder = AudioStreamEncoder("mp3", sample_rate, bit_rate=MP3_BIT_RATE, file=target)
        else:
            self._encoder = None
            self._file = sf.SoundFile(target, "w", sample_rate, 1, format=format.upper(), subtype="PCM_16")

    def write(self, samples: np.ndarray):
        samples = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
        if self._encoder is None:
            self._file.write(samples)
        else:
            self._encoder.write(samples)

    def close(self):
        if self._encoder is None:
            self._file.close()
        else:
            self._encoder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_atomically(path: Path, data) -> Path:
    """Write bytes or text to `path` through a temporary file and a rename: a reader sees all or nothing."""
    partial = path.with_name(path.name + PARTIAL)
    with open(partial, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- the work unit -------------------------------------------------------------------------------------


class UnitWorker:
    """One Kokoro model that speaks units. Made in process, or as a Ray actor (one per worker); `run` is the
    work-unit function of both. The model is loaded by `ready` (a Ray actor's creation can't report an error
    as plainly as a call can), or by the first `run`."""

    def __init__(self, settings: Settings, model=None):
        self.settings, self.model, self.pipelines = settings, model, {}

    def ready(self) -> dict:
        """Load the model (once); then say where this worker runs. A Ray actor's process is set up here, as an
        application is, before anything in it imports mlx.core (a no-op where that was done already)."""
        accelerate()
        from .utils import load_model

        if self.model is None:
            model = load_model(self.settings.model)
            if model.model_type != "kokoro":
                raise InputError(f"{self.settings.model!r} is a {model.model_type} model; batch synthesis speaks "
                                 "with Kokoro models (preset voices)")
            self.model = model
        return {"host": socket.gethostname(), "pid": os.getpid(), "threads": os.environ.get("MLX_TTS_THREADS")}

    def pipeline(self, lang: str):
        from .models.kokoro import KokoroPipeline

        if lang not in self.pipelines:
            self.pipelines[lang] = KokoroPipeline(lang, model=self.model)
        return self.pipelines[lang]

    def run(self, unit: Unit) -> dict:
        """The unit's encoded audio and figures, or {"error": message} for an expected failure (bad text, an
        unknown voice or language); anything else raises, and the caller records it."""
        start = time.perf_counter()
        try:
            self.ready()
            result = self.speak(unit)
        except (MlxTtsError, ValueError, FileNotFoundError) as e:
            return {"error": str(e)}
        return {**result, "elapsed_s": round(time.perf_counter() - start, 3), "worker": f"{socket.gethostname()}:"
                f"{os.getpid()}"}

    def speak(self, unit: Unit) -> dict:
        from .take import kokoro_takes, last

        settings = self.settings
        lang = unit.lang or settings.lang
        pipeline = self.pipeline(lang)
        voice = unit.voice or settings.voice or next(iter(pipeline.voices.names()), None)
        if voice is None:
            raise InputError(f"{settings.model!r} has no voices of its own; give one with --voice")
        take = last(kokoro_takes(pipeline, unit.text, voice, settings.speed, settings.split_pattern,
                                 unit_seed(settings.seed, unit.id)))
        # Short cues grouped as the studio's captions are (not a chunk's whole text); the manifest keeps the
        # cues, not every word's timing, and book.srt joins them.
        cues = [[round(start, 3), round(end, 3), text] for start, end, text in captions.cues(take.words)]
        samples = take.audio
        audio = encode_audio(samples, SAMPLE_RATE, settings.format, bit_rate=MP3_BIT_RATE)
        return {"voice": voice, "lang": lang, "seconds": round(len(samples) / SAMPLE_RATE, 3),
                "sample_rate": SAMPLE_RATE, "cues": cues, "audio": audio}


# ---- progress ------------------------------------------------------------------------------------------


@dataclass
class BatchProgress:
    """Counts of this run (skipped units are not in them); `chars` measure the work, for the ETA."""

    units_total: int
    chars_total: int
    units_done: int = 0
    failed: int = 0
    chars_done: int = 0
    audio_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def throughput(self) -> float:
        """Audio seconds made per wall-clock second."""
        return self.audio_s / max(self.elapsed_s, 1e-9)

    @property
    def eta_s(self) -> Optional[float]:
        if not self.chars_done:
            return None
        return self.elapsed_s * (self.chars_total - self.chars_done) / self.chars_done

    def describe(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f} s"
        failed = f" · {self.failed} failed" if self.failed else ""
        return (f"{self.units_done}/{self.units_total} units{failed} · {self.audio_s:.1f} s of audio · "
                f"{self.throughput:.2f} audio s per s · ETA {eta}")


# ---- the manifest --------------------------------------------------------------------------------------


class Manifest:
    """manifest.jsonl: one JSON line per finished unit, appended as units finish; the last line of an id wins.
    A line cut short by a kill is ignored when read."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def records(self) -> dict:
        records = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    records[record["id"]] = record
        return records

    def append(self, record: dict):
        if self._file is None:
            cut_short = self.path.is_file() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            self._file = open(self.path, "a", encoding="utf-8")
            if cut_short:
                self._file.write("\n")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def rewrite(self, records: list):
        """Replace the manifest by these records (one per unit, in input order), atomically."""
        self.close()
        write_atomically(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def is_finished(record: Optional[dict], key: str, outdir: Path) -> bool:
    """The unit was made with these settings and its file is still what was recorded."""
    if not record or record.get("error") or record.get("key") != key or not record.get("file"):
        return False
    path = outdir / record["file"]
    return path.is_file() and sha256_file(path) == record.get("sha256")


# ---- execution -----------------------------------------------------------------------------------------


def run_in_process(units, finish, settings: Settings, worker_class=UnitWorker, model=None):
    worker = worker_class(settings, model)
    try:
        worker.ready()
    except (MlxTtsError, ValueError, FileNotFoundError) as e:
        raise NotStarted(f"the model did not load: {e}") from None
    for unit in units:
        try:
            result = worker.run(unit)
        except Exception as e:  # a bug or a broken environment: recorded, and the other units go on
            logger.exception("unit %s failed", unit.id)
            result = {"error": f"{type(e).__name__}: {e}"}
        finish(unit, result)


def plan_threads(workers: int, threads: Optional[int], cpus: int, node_cpus: int) -> int:
    """Threads per worker: all the CPUs shared out when not given; workers x threads must fit in `cpus`."""
    if threads is None:
        threads = max(1, min(cpus // workers, node_cpus))
    if workers * threads > cpus or threads > node_cpus:
        raise InputError(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs, but Ray sees {cpus} "
            f"({node_cpus} on the largest node); lower --workers or --threads"
        )
    return threads


def run_on_ray(units, finish, settings: Settings, workers: int, threads: Optional[int] = None, address=None,
               worker_class=UnitWorker):
    """Speak `units` on `workers` Ray actors, one unit in flight per actor, calling `finish` as each ends.

    Ray places the actors (each reserves `threads` CPUs) and restarts one that dies; the unit it was
    speaking is recorded as failed, and the restarted actor takes the next ones. A Ray session started here
    is shut down at the end; one already running (a test's, a notebook's) is left as it was."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:  # no cluster at `address`, or a bad address
            raise NotStarted(f"Ray did not start{f' at {address}' if address else ''}: {e}") from None
    try:
        nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        threads = plan_threads(workers, threads, int(sum(nodes)), int(max(nodes, default=0)))
        env = {"MLX_TTS_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        actor_class = ray.remote(worker_class).options(
            num_cpus=threads, max_restarts=ACTOR_RESTARTS, max_task_retries=0, runtime_env={"env_vars": env}
        )
        actors = [actor_class.remote(settings) for _ in range(workers)]
        try:
            placed = ray.get([actor.ready.remote() for actor in actors])
        except RayTaskError as e:
            raise NotStarted(f"the model did not load: {getattr(e, 'cause', None) or e}") from None
        except RayActorError as e:
            raise NotStarted(f"the workers did not start: {e}") from None
        logger.info("%d workers ready, %d threads each: %s", workers, threads,
                    ", ".join(f"{w['host']}:{w['pid']}" for w in placed))
        queue, in_flight, idle = deque(units), {}, list(actors)
        while queue or in_flight:
            while idle and queue:
                actor, unit = idle.pop(), queue.popleft()
                in_flight[actor.run.remote(unit)] = (unit, actor)
            if not in_flight:  # every worker is gone: the rest are recorded, for the next run to retry
                for unit in queue:
                    finish(unit, {"error": "not run: every worker was lost; rerun to retry"})
                break
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            unit, actor = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except RayTaskError as e:  # the unit raised inside the worker
                cause = getattr(e, "cause", None) or e
                result = {"error": f"{type(cause).__name__}: {cause}"}
            except RayActorError as e:  # the worker process died (with its unit, unless this was a probe)
                if unit is None:
                    logger.warning("a batch worker is gone for good (%s)", type(e).__name__)
                    continue
                # Probe the restarting actor (Ray retries the probe until it is back); it takes units again
                # once the probe returns.
                in_flight[actor.ready.options(max_task_retries=-1).remote()] = (None, actor)
                finish(unit, {"error": f"the worker was lost while speaking this unit ({type(e).__name__}); "
                                       "rerun to retry it"})
                continue
            idle.append(actor)
            if unit is not None:
                finish(unit, result)
    finally:
        if started_here:
            ray.shutdown()


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the run -------------------------------------------------------------------------------------------


@dataclass
class Summary:
    kind: str  # "book" or "dataset"
    units: int
    made: int  # units made by this run
    skipped: int  # units already finished by an earlier run
    failures: list  # [(id, error)]
    audio_s: float  # audio made by this run
    wall_s: float
    outdir: Path
    book: list = field(default_factory=list)  # the joined book's files, when written
    note: str = ""

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def exit_status(self) -> int:
        return min(self.failed, MAX_FAILED_STATUS)

    def files(self) -> list:
        """Every file of the run's output folder that a user wants: unit audio, manifest, book files."""
        records = Manifest(self.outdir / MANIFEST).records().values()
        unit_files = [self.outdir / r["file"] for r in records if r.get("file") and not r.get("error")]
        return unit_files + [self.outdir / MANIFEST] + list(self.book)

    def describe(self) -> str:
        rate = f", {self.audio_s / max(self.wall_s, 1e-9):.2f} audio s per s" if self.made else ""
        lines = [f"Made {self.made} of {self.units} units ({self.audio_s:.1f} s of audio) in {self.wall_s:.1f} s"
                 f"{rate}; {self.skipped} already done; {self.failed} failed. Output: {self.outdir}"]
        lines += [f"  failed {unit_id}: {error}" for unit_id, error in self.failures]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def run_batch(input_path, outdir, settings: Settings = Settings(), workers: int = 1, threads: Optional[int] = None,
              address: Optional[str] = None, progress: Callable = None, chapter_gap_s: float = CHAPTER_GAP_S,
              worker_class=UnitWorker, model=None) -> Summary:
    """Speak every unit of `input_path` into `outdir` (see the module's doc); `progress` is called with a
    `BatchProgress` after each unit. `model`, a loaded Kokoro model, is used in process instead of loading
    `settings.model` (the studio passes the one it has)."""
    from .models.kokoro.pipeline import check_speed

    if settings.format not in FORMATS:
        raise InputError(f"unknown audio format {settings.format!r}; choose one of {', '.join(FORMATS)}")
    check_speed(settings.speed)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    start = time.perf_counter()
    source = read_input(input_path)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for partial in outdir.glob(f"*{PARTIAL}"):  # left by a killed run: never a finished file
        partial.unlink()
    manifest = Manifest(outdir / MANIFEST)
    previous = manifest.records()
    keys = {unit.id: settings.unit_key(unit) for unit in source.units}
    todo = [u for u in source.units if not is_finished(previous.get(u.id), keys[u.id], outdir)]
    state = BatchProgress(len(todo), sum(len(u.text) for u in todo))
    failures = []

    def finish(unit: Unit, result: dict):
        record = {"id": unit.id, **({"title": unit.title} if unit.title else {}), "text": unit.text,
                  "voice": result.get("voice", unit.voice or settings.voice), "lang": result.get("lang", unit.lang or
                  settings.lang), "seconds": result.get("seconds", 0.0), "sample_rate": result.get("sample_rate"),
                  "file": None, "sha256": None}
        if "error" in result:
            record["error"] = result["error"]
            failures.append((unit.id, result["error"]))
            state.failed += 1
        else:
            data = result["audio"]
            record["file"] = f"{file_stem(unit.id)}.{settings.format}"
            write_atomically(outdir / record["file"], data)
            record["sha256"] = hashlib.sha256(data).hexdigest()
            state.audio_s += result["seconds"]
        record.update(key=keys[unit.id], model=settings.model, speed=settings.speed, seed=settings.seed,
                      format=settings.format, cues=result.get("cues", []), elapsed_s=result.get("elapsed_s"),
                      worker=result.get("worker"))
        manifest.append(record)
        state.units_done += 1
        state.chars_done += len(unit.text)
        if progress:
            progress(state)

    try:
        for unit in todo:
            if unit.error:  # unreadable rows are recorded, never spoken
                finish(unit, {"error": unit.error})
        runnable = [u for u in todo if not u.error]
        if progress:
            progress(state)
        if runnable:
            use_ray = address is not None or workers > 1
            if use_ray and not ray_available():
                if address is not None:
                    raise NotStarted("--address needs Ray: pip install -r requirements-batch.txt")
                logger.warning("Ray is not installed (pip install -r requirements-batch.txt); running the %d "
                               "units in this process with one model", len(runnable))
                use_ray = False
            if use_ray:
                run_on_ray(runnable, finish, settings, workers, threads, address, worker_class)
            else:
                run_in_process(runnable, finish, settings, worker_class, model)
    finally:
        records = manifest.records()
        manifest.rewrite([records[u.id] for u in source.units if u.id in records])
    summary = Summary(source.kind, len(source.units), state.units_done - state.failed, len(source.units) - len(todo),
                      failures, state.audio_s, 0.0, outdir)
    if source.kind == "book":
        missing = [u.id for u in source.units if not is_finished(records.get(u.id), keys[u.id], outdir)]
        if missing:
            summary.note = f"The joined book is not written: {len(missing)} chapters are missing; rerun to finish them."
        else:
            summary.book = write_book(outdir, [records[u.id] for u in source.units], settings.format, chapter_gap_s)
    summary.wall_s = time.perf_counter() - start
    return summary


# ---- the joined book -----------------------------------------------------------------------------------


def write_book(outdir: Path, records: list, format: str, gap_s: float) -> list:
    """book.<format> (the chapters in order, `gap_s` of silence between them), chapters.json (the chapters'
    offsets in it) and book.srt (each chapter's caption cues, moved to where it starts). Skipped when
    chapters.json already describes these very chapter files."""
    book = outdir / f"{BOOK}.{format}"
    files = [book, outdir / CHAPTERS, outdir / f"{BOOK}.srt"]
    sources = [{"id": r["id"], "file": r["file"], "sha256": r["sha256"]} for r in records]
    try:
        existing = json.loads((outdir / CHAPTERS).read_text(encoding="utf-8"))
        if (existing.get("sources") == sources and existing.get("gap_s") == gap_s and all(f.is_file() for f in files)
                and sha256_file(book) == existing.get("sha256")):
            return files
    except (OSError, ValueError):
        pass
    chapters, cues, offset = [], [], 0.0
    partial = book.with_name(book.name + PARTIAL)
    with AudioSink(str(partial), SAMPLE_RATE, format) as sink:
        for i, record in enumerate(records):
            audio, rate = sf.read(str(outdir / record["file"]), dtype="float32")
            if i:
                sink.write(np.zeros(int(gap_s * SAMPLE_RATE), np.float32))
                offset += int(gap_s * SAMPLE_RATE) / SAMPLE_RATE
            sink.write(audio)
            seconds = len(audio) / rate
            chapters.append({"id": record["id"], "title": record.get("title") or record["id"],
                             "start_s": round(offset, 3), "end_s": round(offset + seconds, 3)})
            cues += [(offset + a, offset + b, text) for a, b, text in record.get("cues", [])]
            offset += seconds
    os.replace(partial, book)
    write_atomically(files[2], captions.cues_to_srt(cues))
    index = {"file": book.name, "format": format, "sample_rate": SAMPLE_RATE, "seconds": round(offset, 3),
             "gap_s": gap_s, "sha256": sha256_file(book), "chapters": chapters, "sources": sources}
    write_atomically(files[1], json.dumps(index, ensure_ascii=False, indent=1))
    return files


# ---- command line --------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors share the "could not start" status, not a failed-units count
        self.print_usage(sys.stderr)
        self.exit(NOT_STARTED_STATUS, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    p = _Parser(prog="python -m mlx_tts.batch", description=__doc__.split("\n\n")[0],
                epilog="Exit status: 0 all done; 1-100 that many units failed (rerun to retry them); "
                       "101 the run could not start.")
    p.add_argument("input", help=f"a book or a dataset: {', '.join(SUFFIXES)}")
    p.add_argument("-o", "--outdir", required=True, help="output folder (a rerun resumes in it)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Kokoro model: Hugging Face repo id or local folder")
    p.add_argument("--voice", default=None, help="voice for units without their own (default: the model's first)")
    p.add_argument("--lang", default="a", help="language for units without their own: a, b, e, f, h, i, p, j, z")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate, 0.25 to 4")
    p.add_argument("--format", default="wav", choices=FORMATS, help="audio format of every file")
    p.add_argument("--seed", type=int, default=0, help="random seed (with a unit's id, it fixes the unit's audio)")
    p.add_argument("--split-pattern", default=r"\n+", help="regex that cuts a unit's text into parts")
    p.add_argument("--workers", type=int, default=1, help="engine workers (Ray actors when more than 1)")
    p.add_argument("--threads", type=int, default=None, help="threads per Ray worker (default: CPUs / workers)")
    p.add_argument("--address", default=None, help="a running Ray cluster to join, e.g. auto")
    p.add_argument("--chapter-gap", type=float, default=CHAPTER_GAP_S, help="seconds of silence between chapters")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


class TqdmProgress:
    """A tqdm bar over the text of the units to make (its ETA), with audio seconds and throughput."""

    def __init__(self):
        self.bar = None

    def __call__(self, state: BatchProgress):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=state.chars_total, unit="char", unit_scale=True, dynamic_ncols=True,
                            desc=f"0/{state.units_total} units")
        self.bar.set_description(f"{state.units_done}/{state.units_total} units", refresh=False)
        self.bar.set_postfix_str(f"{state.audio_s:.1f} s audio, {state.throughput:.2f} audio s/s"
                                 + (f", {state.failed} failed" if state.failed else ""), refresh=False)
        self.bar.update(state.chars_done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    settings = Settings(model=args.model, voice=args.voice, lang=args.lang, speed=args.speed, format=args.format,
                        seed=args.seed, split_pattern=args.split_pattern or None)
    bar = TqdmProgress()
    try:
        summary = run_batch(args.input, args.outdir, settings, workers=args.workers, threads=args.threads,
                            address=args.address, progress=bar, chapter_gap_s=args.chapter_gap)
    except (MlxTtsError, ValueError, FileNotFoundError) as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(NOT_STARTED_STATUS)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: the finished units are recorded; rerun the same command to go on", file=sys.stderr)
        sys.exit(130)
    bar.close()
    print(summary.describe())
    sys.exit(summary.exit_status)


if __name__ == "__main__":
    main()
