"""The studio's one door into `mlx_tts`: a model cache, one lock, progress reporting and readable errors.

Tabs call only this module. Models are cached by (model id, quantization), least recently used first out.
Every engine step runs under one lock, because MLX's random state and the CPU are shared by all sessions;
the queue serializes events too, the lock keeps direct callers (tests, scripts) safe as well. A visitor's
input is checked against the studio's policy (studio/policy.py) before the lock is taken.
Engine errors (`MlxTtsError`) become `gr.Error` messages as they are (no stack traces in the browser);
unexpected ones are logged with a traceback under an id, and the browser gets "internal error" and that id.
"""

import functools
import html
import inspect
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import gradio as gr
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlx_tts import audio as audio_io
from mlx_tts import captions, quality
from mlx_tts.convert import convert
from mlx_tts.errors import MlxTtsError
from mlx_tts.memory import peak_rss_mb
from mlx_tts.quantize import full_precision_layers
from mlx_tts.utils import DEFAULT_MODEL, load_model, save_model

from .policy import CSM_MODEL, MAX_TEXT_CHARS, Policy, StudioError, check_audio_upload, check_seed, check_text  # noqa: F401

logger = logging.getLogger("mlx_tts.studio")

SAMPLE_RATE = audio_io.SAMPLE_RATE
MAX_CACHED_MODELS = 3
KEEP_TAKES = 30  # output folders kept on disk; older ones are deleted
KEEP_EXPORTS = 2  # quantized-model zips kept on disk (public mode)


@dataclass(frozen=True)
class Quantization:
    bits: int
    group_size: int = 64
    recipe: str = "uniform"

    def __str__(self):
        return f"{self.bits}-bit, group {self.group_size}, {self.recipe}"

    @property
    def slug(self):
        return f"{self.bits}b-g{self.group_size}-{self.recipe}"


@dataclass
class Loaded:
    model: object
    load_s: float  # time `load_model` took (a quantized model: loading its saved folder back)
    folder: Path  # the folder it was loaded from
    pipelines: dict = field(default_factory=dict)  # lang_code -> KokoroPipeline, or "csm" -> CSMPipeline


@dataclass
class Take:
    """One generation: audio per chunk, per-chunk rows, the measured figures and (once finished) its files."""

    settings: dict
    pieces: list = field(default_factory=list)  # float32 audio per chunk
    chunks: list = field(default_factory=list)  # [(graphemes, phonemes, seconds)]
    elapsed_s: float = 0.0  # time spent generating; model loading is not counted
    peak_mlx_mb: float = 0.0
    files: list = field(default_factory=list)  # [wav, flac], and Kokoro's captions [srt, vtt]
    words: list = field(default_factory=list)  # [captions.WordTiming] (Kokoro)
    replaced: list = field(default_factory=list)  # words the pronunciation lexicon replaced

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)

    @property
    def seconds(self):
        return sum(len(p) for p in self.pieces) / SAMPLE_RATE

    @property
    def real_time_factor(self):
        return self.elapsed_s / max(self.seconds, 1e-9)

    def stats_markdown(self):
        settings = " · ".join(f"{k} `{v}`" for k, v in self.settings.items())
        replaced = f"\n\nLexicon replaced: {', '.join(self.replaced)}" if self.replaced else ""
        return (
            f"**{self.seconds:.2f} s** of audio in {self.elapsed_s:.2f} s · real-time factor "
            f"**{self.real_time_factor:.2f}** (below 1 is faster than real time) · peak memory "
            f"**{self.peak_mlx_mb:.0f} MB** MLX, {peak_rss_mb():.0f} MB process RSS\n\n{settings}{replaced}"
        )


def ui_errors(fn):
    """Turn exceptions from `fn` (a function or a generator) into `gr.Error` with a plain message: an
    `MlxTtsError`'s own message, or for anything else "internal error" with an id that the log's traceback has."""

    def to_ui_error(e):
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, MlxTtsError):
            message = str(e)
        else:
            error_id = uuid.uuid4().hex[:8]
            logger.error("studio: internal error %s in %s", error_id, fn.__name__, exc_info=e)
            message = f"Internal error (id {error_id}); the server log has the details under that id."
        return gr.Error(html.escape(message, quote=False), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as e:
                raise to_ui_error(e) from None

        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise to_ui_error(e) from None

    return function


class Engine:
    def __init__(self, max_models=MAX_CACHED_MODELS, work_dir=None, policy: Optional[Policy] = None):
        self.lock = threading.RLock()
        self.max_models = max_models
        self.policy = policy or Policy()
        self._models: "OrderedDict[tuple, Loaded]" = OrderedDict()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="mlx_tts_studio_"))
        self._take_number = 0

    # ---- models -------------------------------------------------------------------------------------

    def loaded(self, model_id: str, quantization: Optional[Quantization] = None, progress=None) -> Loaded:
        """The cached model for (model id, quantization), loading it on first use.

        A quantized model is written by `mlx_tts.convert.convert` from a fresh full-precision copy (quantization
        works in place) and loaded back with `load_model`, so what the studio runs is what a user would load."""
        model_id = self.policy.model_source(model_id or (self.policy.allowed_models or [DEFAULT_MODEL])[0])
        key = (model_id, quantization)
        with self.lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            report(progress, 0.0, f"Loading {model_id}" + (f" ({quantization})" if quantization else ""))
            source = model_id
            if quantization is not None:
                source = self.work_dir / "quantized" / f"{Path(model_id).name}-{quantization.slug}"
                shutil.rmtree(source, ignore_errors=True)
                convert(model_id, source, quantize=True, q_bits=quantization.bits,
                        q_group_size=quantization.group_size, q_recipe=quantization.recipe)
                report(progress, 0.6, "Loading the quantized folder back")
            start = time.perf_counter()
            model = load_model(source)
            loaded = Loaded(model, time.perf_counter() - start, Path(model.path))
            self._models[key] = loaded
            while len(self._models) > self.max_models:
                _, evicted = self._models.popitem(last=False)
                if evicted.folder.parent == self.work_dir / "quantized":  # ours: hundreds of MB each
                    shutil.rmtree(evicted.folder, ignore_errors=True)
            return loaded

    def model_summary(self, loaded: Loaded) -> str:
        model = loaded.model
        quantization = model.config.get("quantization")
        precision = (
            f"{quantization['bits']}-bit (group {quantization['group_size']})" if quantization else "full precision"
        )
        folder = loaded.folder.name if self.policy.public else loaded.folder  # no server paths for visitors
        return (
            f"`{model.model_type}` model from `{folder}` · {precision} · "
            f"{quality.parameter_memory_mb(model):.0f} MB of parameters · loaded in {loaded.load_s:.1f} s"
        )

    # ---- Kokoro -------------------------------------------------------------------------------------

    def kokoro_model(self, model_id: str, quantization=None, progress=None) -> Loaded:
        loaded = self.loaded(model_id, quantization, progress)
        if loaded.model.model_type != "kokoro":
            raise StudioError(
                f"{model_id!r} is a {loaded.model.model_type} model; the Kokoro tab needs a Kokoro model "
                f"(for CSM use the CSM tab)"
            )
        return loaded

    def kokoro(self, model_id: str, quantization=None, lang_code="a", progress=None):
        """A KokoroPipeline for the model and language (cached with the model)."""
        from mlx_tts.models.kokoro import KokoroPipeline

        loaded = self.kokoro_model(model_id, quantization, progress)
        with self.lock:
            if lang_code not in loaded.pipelines:
                pipeline = KokoroPipeline(lang_code, model=loaded.model)
                pipeline.g2p  # build the G2P now (seconds), so that a take's real-time factor leaves it out
                loaded.pipelines[lang_code] = pipeline
            return loaded.pipelines[lang_code]

    @ui_errors
    def kokoro_voices(self, model_id: str, quantization=None) -> tuple[list, str]:
        """(voice names, a one-line summary of the model)."""
        from mlx_tts.models.kokoro import VoiceBank

        loaded = self.kokoro_model(model_id, quantization)
        return VoiceBank(loaded.folder).names(), self.model_summary(loaded)

    @ui_errors
    def kokoro_takes(
        self, model_id, quantization, text, voice, lang_code, speed, split_pattern, seed, phonemes=None,
        first_chunk_max=None, progress=None, lexicon=None,
    ) -> Iterator[tuple]:
        """Yield (chunk file, the take so far) per chunk, then (None, the finished take with its files).

        With `phonemes`, each non-empty line is spoken as given (edited phonemes); otherwise `text` is, with
        the pronunciation `lexicon` ({"word": "phonemes"}) applied before G2P.
        `first_chunk_max` caps the first chunk's phonemes, so that a stream starts sooner.
        Each chunk is made under the lock, so a stopped stream frees the engine once its chunk is done."""
        from mlx_tts.models.kokoro.pipeline import split_text

        # Everything a visitor typed is checked here, outside the lock: a slow split pattern holds up no one.
        seed = check_seed(seed)
        if phonemes is None:
            check_text(text)
            split_pattern = self.policy.check_splitter(split_pattern)
            split_text(text, split_pattern)
        else:
            check_text(phonemes, "phoneme text")
        pipeline = self.kokoro(model_id, quantization, lang_code, progress)
        voice = self.policy.check_voice(voice, pipeline.voices.names(), Path(pipeline.model.path))
        if lexicon and phonemes is None:
            pipeline = pipeline.with_lexicon(lexicon)
        if phonemes is None:
            parts = [pipeline(text, voice=voice, speed=speed, split_pattern=split_pattern,
                              first_chunk_max=first_chunk_max)]
        else:
            lines = [line for line in phonemes.splitlines() if line.strip()]
            parts = [pipeline.from_phonemes(line, voice, speed, first_chunk_max if i == 0 else None)
                     for i, line in enumerate(lines)]
        settings = {"model": model_id, "precision": str(quantization or "full"), "voice": voice,
                    "lang": lang_code, "speed": speed, "seed": seed}
        take = Take(settings, replaced=pipeline.lexicon.matches(text))  # edited phonemes get no lexicon
        take_dir = self.new_take_dir()
        for results in parts:
            while True:
                with self.lock:
                    if not take.pieces:  # seeded right before the first chunk, under the same lock
                        mx.random.seed(seed)
                        mx.reset_peak_memory()
                    start = time.perf_counter()
                    result = next(results, None)
                    if result is None:
                        break
                    chunk = np.asarray(result.audio[0], dtype=np.float32)
                    take.elapsed_s += time.perf_counter() - start
                    take.peak_mlx_mb = max(take.peak_mlx_mb, mx.get_peak_memory() / 2**20)
                take.words += pipeline.word_timings(result, take.seconds)
                take.pieces.append(chunk)
                take.chunks.append((result.graphemes, result.phonemes, len(chunk) / SAMPLE_RATE))
                path = str(take_dir / f"chunk_{len(take.pieces):03d}.wav")
                audio_io.write_audio(path, chunk, SAMPLE_RATE, "wav")
                report(progress, (len(take.pieces), None), f"Chunk {len(take.pieces)}: {result.duration_s:.1f} s")
                yield path, take
        take.files = self.write_take(take.audio, "kokoro", settings)
        take.files += self.write_captions(take.words, take.files[0])
        yield None, take

    def kokoro_take(self, *args, **kwargs) -> Take:
        """The finished take of `kokoro_takes`."""
        for _, take in self.kokoro_takes(*args, **kwargs):
            pass
        return take

    # ---- CSM ----------------------------------------------------------------------------------------

    def csm(self, model_id: str, progress=None):
        from mlx_tts.models.csm import CSMPipeline

        loaded = self.loaded(model_id, None, progress)
        if loaded.model.model_type != "csm":
            raise StudioError(
                f"{model_id!r} is a {loaded.model.model_type} model; the CSM tab needs a CSM model "
                f"(for Kokoro use the Kokoro tab)"
            )
        with self.lock:
            if "csm" not in loaded.pipelines:
                loaded.pipelines["csm"] = CSMPipeline(loaded.model)
            return loaded, loaded.pipelines["csm"]

    @ui_errors
    def csm_status(self, model_id: str) -> str:
        loaded, _ = self.csm(model_id)
        return "Ready: " + self.model_summary(loaded)

    @ui_errors
    def reference_clip(self, path) -> dict:
        """Stats of a reference clip as the model will hear it (mono, 24 kHz), plus its own sample rate."""
        header = check_audio_upload(path)
        clip = audio_io.load_audio(str(path), SAMPLE_RATE)
        return {**audio_io.audio_stats(clip, SAMPLE_RATE), "sample_rate": header["sample_rate"]}

    @ui_errors
    def csm_take(self, model_id, text, ref_audio, ref_text, speaker, temperature, top_k, max_ms, seed,
                 progress=None) -> Take:
        check_text(text)
        seed = check_seed(seed)
        if ref_audio:
            check_audio_upload(ref_audio)
        _, pipeline = self.csm(model_id, progress)
        settings = {"model": model_id, "speaker": int(speaker), "temperature": float(temperature),
                    "top_k": int(top_k), "seed": seed}
        with self.lock:
            mx.reset_peak_memory()
            start = time.perf_counter()
            audio = pipeline.generate(
                text,
                ref_audio=str(ref_audio) if ref_audio else None,
                ref_text=ref_text or None,
                speaker=int(speaker),
                temperature=float(temperature),
                top_k=int(top_k),
                seed=seed,
                max_audio_length_ms=float(max_ms),
                progress=frame_progress(progress, start),
            )
            take = Take(settings, [np.asarray(audio, dtype=np.float32).reshape(-1)],
                        elapsed_s=time.perf_counter() - start, peak_mlx_mb=mx.get_peak_memory() / 2**20)
        take.files = self.write_take(take.audio, "csm", settings)
        return take

    # ---- quantization -------------------------------------------------------------------------------

    @ui_errors
    def quantize_and_compare(self, model_id, quantization: Quantization, text, voice, lang_code, seed,
                             progress=None) -> dict:
        """Quantize (cached), then compare it with full precision on the same text, voice and seed.

        Returns `mlx_tts.quality.compare`'s report, plus each side's load time ("load_s_reference",
        "load_s_candidate"), the layers kept in full precision and both takes as wav files ("files")."""
        check_text(text)
        seed = check_seed(seed)
        from mlx_tts.models.kokoro import VoiceBank

        reference = self.loaded(model_id, None, progress)
        voice = self.policy.check_voice(voice, VoiceBank(reference.folder).names(), reference.folder)
        candidate = self.loaded(model_id, quantization, progress)
        report(progress, 0.7, "Generating both takes and measuring")
        with self.lock:
            result = quality.compare(reference.model, candidate.model, text, seed=seed,
                                     candidate_dir=candidate.folder, voice=voice, lang_code=lang_code)
        audio = result.pop("audio")
        files = {}
        for side, precision in (("reference", "full"), ("candidate", str(quantization))):
            settings = {"model": model_id, "precision": precision, "voice": voice, "seed": seed}
            files[side] = self.write_take(np.asarray(audio[side], np.float32), side, settings)[0]
        return {
            **result,
            "load_s_reference": reference.load_s,
            "load_s_candidate": candidate.load_s,
            "kept_full_precision": full_precision_layers(candidate.model.config),
            "files": files,
            "log_mel": {side: quality.log_mel(audio[side]) for side in files},
        }

    @ui_errors
    def save_quantized(self, model_id, quantization: Quantization, destination: str) -> Path:
        """Write the quantized model as a folder `load_model` loads, under the output root (lab mode)."""
        destination = self.policy.output_folder(destination)
        loaded = self.loaded(model_id, quantization)
        with self.lock:
            weights = dict(tree_flatten(loaded.model.parameters()))
            return save_model(destination, weights, loaded.model.config, loaded.folder)

    @ui_errors
    def export_quantized(self, model_id, quantization: Quantization) -> Path:
        """The quantized model's folder as a zip in the work dir, for a download (public mode saves nothing)."""
        loaded = self.loaded(model_id, quantization)
        exports = self.work_dir / "exports"
        with self.lock:
            self._take_number += 1
            folder = exports / f"{self._take_number:05d}" / f"{Path(model_id).name}-{quantization.slug}"
            weights = dict(tree_flatten(loaded.model.parameters()))
            save_model(folder, weights, loaded.model.config, loaded.folder)
            archive = shutil.make_archive(str(folder), "zip", folder.parent, folder.name)
            shutil.rmtree(folder)
            for old in sorted(exports.iterdir())[:-KEEP_EXPORTS]:
                shutil.rmtree(old, ignore_errors=True)
        return Path(archive)

    # ---- files --------------------------------------------------------------------------------------

    def new_take_dir(self) -> Path:
        with self.lock:
            self._take_number += 1
            folder = self.work_dir / "takes" / f"{self._take_number:05d}"
            folder.mkdir(parents=True)
            for old in sorted((self.work_dir / "takes").iterdir())[:-KEEP_TAKES]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def write_take(self, audio: np.ndarray, kind: str, settings: dict) -> list:
        """[wav, flac] paths, named after the settings that made them."""
        folder = self.new_take_dir()
        named = [f"{k}{v}" if isinstance(v, (int, float)) else v for k, v in settings.items() if v not in (None, "")]
        stem = "_".join([kind] + [slug(v) for v in named])[:120]
        paths = [str(folder / f"{stem}.{fmt}") for fmt in ("wav", "flac")]
        for path in paths:
            audio_io.write_audio(path, audio, SAMPLE_RATE, path.rsplit(".", 1)[1])
        return paths

    @staticmethod
    def write_captions(words: list, audio_path: str) -> list:
        """[srt, vtt] caption files of the word timings, beside the take's audio and named like it."""
        paths = []
        for fmt, render in (("srt", captions.to_srt), ("vtt", captions.to_vtt)):
            path = Path(audio_path).with_suffix(f".{fmt}")
            path.write_text(render(words), encoding="utf-8")
            paths.append(str(path))
        return paths


def slug(value) -> str:
    text = "".join(c if c.isalnum() or c in ".-" else "-" for c in str(Path(str(value)).name))
    return "-".join(filter(None, text.split("-")))


def report(progress: Optional[Callable], fraction, description: str):
    if progress is not None:
        progress(fraction, desc=description)


def frame_progress(progress: Optional[Callable], start: float):
    """A CSM frame callback that reports frames done and an estimated time left."""
    if progress is None:
        return None

    def on_frame(done: int, total: int):
        elapsed = time.perf_counter() - start
        eta = elapsed / max(done, 1) * (total - done)
        desc = f"Frame {done}/{total} · {elapsed:.0f} s elapsed · {eta:.0f} s left at most"
        progress(done / max(total, 1), desc=desc)

    return on_frame
