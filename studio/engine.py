"""The studio's one door into `mlx_tts`: a model cache, one lock, measured takes (`mlx_tts.take`) and their files.

Tabs call only this module and studio/widgets.py; the constants they show are re-exported here. No Gradio here:
`widgets.ui_errors` shows the `MlxTtsError`s raised here in the browser. Models are cached by (model id,
quantization), least recently used first out. Every engine step runs under one lock, because MLX's random state
and the CPU are shared by all sessions; the queue serializes events too, the lock keeps direct callers (the
OpenAI API, tests, scripts) safe as well. Input is checked against studio/policy.py before the lock is taken.
"""

import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from mlx.utils import tree_flatten

from mlx_tts import audio as audio_io, ext, quality  # noqa: F401 (ext: the tabs ask whether the native kernels are ready)
from mlx_tts.batch import FORMATS as LONGFORM_FORMATS, Settings as LongformSettings, run_batch  # noqa: F401
from mlx_tts.errors import MlxTtsError  # noqa: F401
from mlx_tts.g2p import LANG_CODES, script_mismatch  # noqa: F401
from mlx_tts.lexicon import load_lexicon  # noqa: F401
from mlx_tts.longform_input import SUFFIXES as LONGFORM_SUFFIXES  # noqa: F401
from mlx_tts.memory import peak_rss_mb  # noqa: F401
from mlx_tts.models.csm import CSMPipeline
from mlx_tts.models.csm.pipeline import MAX_REFERENCE_S, MIN_REFERENCE_S  # noqa: F401
from mlx_tts.models.kokoro import KokoroPipeline, VoiceBank
from mlx_tts.models.kokoro.pipeline import STREAM_FIRST_CHUNK  # noqa: F401
from mlx_tts.quantize import RECIPES, VALID_BITS, VALID_GROUP_SIZES, Quantization, full_precision_layers  # noqa: F401
from mlx_tts.take import Take, csm_takes, kokoro_takes, last
from mlx_tts.utils import DEFAULT_MODEL, load_model, save_model

from .outputs import Outputs
from .policy import (  # noqa: F401
    CSM_MODEL,
    DEFAULT_SPLITTER,
    MAX_TEXT_CHARS,
    SPLITTERS,
    Policy,
    StudioError,
    check_audio_upload,
    check_bits,
    check_group_size,
    check_seed,
    check_text,
)

MAX_CACHED_MODELS = 3
TABS = {"kokoro": "Kokoro", "csm": "CSM"}  # model type -> the tab that speaks with it


@dataclass
class Loaded:
    model: object
    load_s: float  # time `load_model` took (a quantized model: loading its saved folder back)
    folder: Path  # the folder it was loaded from
    pipelines: dict = field(default_factory=dict)  # lang_code -> KokoroPipeline, or "csm" -> CSMPipeline


class Engine:
    def __init__(self, max_models=MAX_CACHED_MODELS, work_dir=None, policy: Optional[Policy] = None):
        self.lock = threading.RLock()
        self.max_models = max_models
        self.policy = policy or Policy()
        self._models: "OrderedDict[tuple, Loaded]" = OrderedDict()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="mlx_tts_studio_"))
        self.outputs = Outputs(self.work_dir)

    # ---- models -------------------------------------------------------------------------------------

    def loaded(self, model_id: str, quantization: Optional[Quantization] = None, progress=None,
               model_type: Optional[str] = None) -> Loaded:
        """The cached model for (model id, quantization), loading it on first use; `model_type` is the kind the
        caller needs. A quantized model is written as a folder and loaded back: what a user would load."""
        model_id = self.policy.model_source(model_id or (self.policy.allowed_models or [DEFAULT_MODEL])[0])
        key = (model_id, quantization)
        with self.lock:
            if key not in self._models:
                report(progress, 0.0, f"Loading {model_id}" + (f" ({quantization})" if quantization else ""))
                source = model_id
                if quantization is not None:
                    source = self.outputs.quantized_model(model_id, quantization)
                    report(progress, 0.6, "Loading the quantized folder back")
                start = time.perf_counter()
                model = load_model(source)
                self._models[key] = Loaded(model, time.perf_counter() - start, Path(model.path))
                while len(self._models) > self.max_models:
                    self.outputs.discard(self._models.popitem(last=False)[1].folder)
            self._models.move_to_end(key)
            loaded = self._models[key]
        if model_type and loaded.model.model_type != model_type:
            want, other = TABS[model_type], TABS.get(loaded.model.model_type, loaded.model.model_type)
            raise StudioError(f"{model_id!r} is a {loaded.model.model_type} model; the {want} tab needs a {want} "
                              f"model (for {other} use the {other} tab)")
        return loaded

    def model_summary(self, loaded: Loaded) -> str:
        model, q = loaded.model, loaded.model.config.get("quantization")
        precision = f"{q['bits']}-bit (group {q['group_size']})" if q else "full precision"
        folder = loaded.folder.name if self.policy.public else loaded.folder  # no server paths for visitors
        return (f"`{model.model_type}` model from `{folder}` · {precision} · "
                f"{quality.parameter_memory_mb(model):.0f} MB of parameters · loaded in {loaded.load_s:.1f} s")

    # ---- Kokoro -------------------------------------------------------------------------------------

    def kokoro_model(self, model_id: str, quantization=None, progress=None) -> Loaded:
        return self.loaded(model_id, quantization, progress, "kokoro")

    def kokoro(self, model_id: str, quantization=None, lang_code="a", progress=None):
        """A KokoroPipeline for the model and language (cached with the model)."""
        loaded = self.kokoro_model(model_id, quantization, progress)
        with self.lock:
            if lang_code not in loaded.pipelines:
                pipeline = KokoroPipeline(lang_code, model=loaded.model)
                _ = pipeline.g2p  # build the G2P now (seconds), so that a take's real-time factor leaves it out
                loaded.pipelines[lang_code] = pipeline
            return loaded.pipelines[lang_code]

    def kokoro_voices(self, model_id: str, quantization=None) -> tuple[list, str]:
        """(voice names, a one-line summary of the model)."""
        loaded = self.kokoro_model(model_id, quantization)
        return VoiceBank(loaded.folder).names(), self.model_summary(loaded)

    def kokoro_takes(self, model_id, quantization, text, voice, lang_code, speed, split_pattern, seed, phonemes=None,
                     first_chunk_max=None, progress=None, lexicon=None) -> Iterator[tuple]:
        """Yield (chunk file, the take so far) per chunk, then (None, the finished take with its files).

        With `phonemes`, each non-empty line is spoken as given (edited phonemes); otherwise `text` is, with
        the pronunciation `lexicon` ({"word": "phonemes"}) applied before G2P. `first_chunk_max` caps the first
        chunk's phonemes, so that a stream starts sooner (see `mlx_tts.take.kokoro_takes`)."""
        seed = check_seed(seed)
        check_text(text if phonemes is None else phonemes, "text" if phonemes is None else "phoneme text")
        split_pattern = self.policy.check_splitter(split_pattern) if phonemes is None else None
        pipeline = self.kokoro(model_id, quantization, lang_code, progress)
        voice = self.policy.check_voice(voice, pipeline.voices.names(), Path(pipeline.model.path))
        if lexicon and phonemes is None:
            pipeline = pipeline.with_lexicon(lexicon)
        settings = {"model": model_id, "precision": str(quantization or "full"), "voice": voice,
                    "lang": lang_code, "speed": speed, "seed": seed}
        take_dir = self.outputs.new_folder()
        for take in kokoro_takes(pipeline, text, voice, speed, split_pattern, seed, first_chunk_max, self.lock,
                                 phonemes=phonemes, settings=settings):
            path = str(take_dir / f"chunk_{len(take.pieces):03d}.wav")
            audio_io.write_audio(path, take.pieces[-1], audio_io.SAMPLE_RATE, "wav")
            report(progress, (len(take.pieces), None), f"Chunk {len(take.pieces)}: {take.chunks[-1][2]:.1f} s")
            yield path, take
        take.files = self.outputs.write_take(take.audio, "kokoro", settings)
        take.files += self.outputs.write_captions(take.words, take.files[0])
        yield None, take

    def kokoro_take(self, *args, **kwargs) -> Take:
        """The finished take of `kokoro_takes`."""
        return last(take for _, take in self.kokoro_takes(*args, **kwargs))

    def longform(self, path: Path, model_id, quantization, settings: LongformSettings, progress=None):
        """`mlx_tts.batch.run_batch` of a book or dataset on the cached model, into a folder named by the
        upload's hash (uploading it again resumes there)."""
        loaded = self.kokoro_model(model_id, quantization, progress)
        with self.lock:
            return run_batch(path, self.outputs.upload_folder(path), settings, model=loaded.model,
                             progress=lambda s: report(progress, s.chars_done / max(s.chars_total, 1), s.describe()))

    # ---- CSM ----------------------------------------------------------------------------------------

    def csm(self, model_id: str, progress=None):
        loaded = self.loaded(model_id, None, progress, "csm")
        with self.lock:
            if "csm" not in loaded.pipelines:
                loaded.pipelines["csm"] = CSMPipeline(loaded.model)
            return loaded, loaded.pipelines["csm"]

    def csm_status(self, model_id: str) -> str:
        return "Ready: " + self.model_summary(self.csm(model_id)[0])

    def reference_clip(self, path) -> dict:
        """Stats of a reference clip as the model will hear it (mono, 24 kHz), plus its own sample rate."""
        header = check_audio_upload(path)
        clip = audio_io.load_audio(str(path), audio_io.SAMPLE_RATE)
        return {**audio_io.audio_stats(clip, audio_io.SAMPLE_RATE), "sample_rate": header["sample_rate"]}

    def csm_take(self, model_id, text, ref_audio, ref_text, speaker, temperature, top_k, max_ms, seed,
                 progress=None, on_frame=None) -> Take:
        """`on_frame(done, total)` is called after every frame, with frames done and the most still to come."""
        check_text(text)
        seed = check_seed(seed)
        if ref_audio:
            check_audio_upload(ref_audio)
        _, pipeline = self.csm(model_id, progress)
        settings = {"model": model_id, "speaker": int(speaker), "temperature": float(temperature),
                    "top_k": int(top_k), "seed": seed}
        take = last(csm_takes(pipeline, text, seed, self.lock, settings,
                              ref_audio=str(ref_audio) if ref_audio else None,
                              ref_text=ref_text or None, speaker=int(speaker), temperature=float(temperature),
                              top_k=int(top_k), max_audio_length_ms=float(max_ms), progress=on_frame))
        take.files = self.outputs.write_take(take.audio, "csm", settings)
        return take

    # ---- quantization -------------------------------------------------------------------------------

    def quantize_and_compare(self, model_id, quantization: Quantization, text, voice, lang_code, seed,
                             progress=None) -> dict:
        """Quantize (cached), then compare it with full precision on the same text, voice and seed.

        Returns `mlx_tts.quality.compare`'s report, plus each side's load time ("load_s_reference",
        "load_s_candidate"), the layers kept in full precision and both takes as wav files ("files")."""
        check_text(text)
        seed = check_seed(seed)
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
            files[side] = self.outputs.write_take(np.asarray(audio[side], np.float32), side, settings)[0]
        return {**result, "load_s_reference": reference.load_s, "load_s_candidate": candidate.load_s,
                "kept_full_precision": full_precision_layers(candidate.model.config), "files": files,
                "log_mel": {side: quality.log_mel(audio[side]) for side in files}}

    def save_quantized(self, model_id, quantization: Quantization, destination: Optional[str] = None) -> Path:
        """Write the quantized model as a folder `load_model` loads: under the output root (lab mode), or, with
        no `destination`, as a zip in the work dir for a download (public mode saves nothing on the server)."""
        folder = None if destination is None else self.policy.output_folder(destination)  # before quantizing
        loaded = self.loaded(model_id, quantization)

        def write(folder):
            with self.lock:
                weights = dict(tree_flatten(loaded.model.parameters()))
                return save_model(folder, weights, loaded.model.config, loaded.folder)

        return write(folder) if folder else self.outputs.zip_folder(f"{Path(model_id).name}-{quantization.slug}", write)


def report(progress: Optional[Callable], fraction, description: str):
    if progress is not None:
        progress(fraction, desc=description)
