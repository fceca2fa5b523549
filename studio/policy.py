"""What a studio visitor may make the server read and write: the mode, the model allowlist, the folders paths
must stay in, and the bounds on uploads and settings. Everything the studio checks about a visitor's input
is decided here, so that it can be tested without a server.

`public` (a Hugging Face Space, or `--public`): models only from the allowlist, no server path anywhere,
quantized models handed out as a zip. `lab` (local use): folders written only under the output root, model
folders read only from the output root, the converted-model cache and the `--model-dir` roots.
"""

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import soundfile

from mlx_tts.cache import cache_dir
from mlx_tts.errors import MlxTtsError
from mlx_tts.models.kokoro.pipeline import SENTENCE_END
from mlx_tts.models.kokoro.voices import VOICE_SUFFIXES
from mlx_tts.quantize import VALID_BITS, VALID_GROUP_SIZES

PUBLIC, LAB = "public", "lab"
CSM_MODEL = "mlx-community/csm-1b"  # the CSM tab's default
MAX_TEXT_CHARS = 5000
MAX_AUDIO_UPLOAD_MB = 20
MAX_AUDIO_UPLOAD_S = 120  # CSM hears at most 30 s of it; longer clips are trimmed with a warning
AUDIO_RATES = (8000, 192000)
MAX_VOICE_UPLOAD_MB = 2  # a Kokoro voice is 510 x 256 floats, 0.5 MB
MAX_SEED = 2**32 - 1
# Named splitters: the only split patterns a public studio takes (a visitor's regex could backtrack for hours).
SPLITTERS = {
    "lines": r"\n+",
    "sentences": SENTENCE_END.pattern,
    "paragraphs": r"\n\s*\n",
    "none": None,
}
DEFAULT_SPLITTER = "lines"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WORK_AREA = "mlx_tts_studio"


class StudioError(MlxTtsError, ValueError):
    """A visitor's input the studio refuses; the message says why and what is accepted."""


def default_mode(environ=os.environ) -> str:
    """Public on a Hugging Face Space (which sets SPACE_ID), lab elsewhere."""
    return PUBLIC if environ.get("SPACE_ID") else LAB


def allowed_models_from_env(environ=os.environ) -> list:
    return [m.strip() for m in environ.get("MLX_TTS_ALLOWED_MODELS", "").split(",") if m.strip()]


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink followed, is `root` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


@dataclass
class Policy:
    mode: str = LAB
    allowed_models: tuple = ()  # public mode: the only models a visitor may pick (the first is the default)
    output_root: Path = Path("studio-output")
    model_roots: tuple = ()  # lab mode: folders local models may load from, besides the output root and the cache
    upload_root: Optional[Path] = None  # where Gradio keeps uploads: the only voice files besides a model's own

    def __post_init__(self):
        if self.mode not in (PUBLIC, LAB):
            raise ValueError(f"mode must be {PUBLIC!r} or {LAB!r}, not {self.mode!r}")
        self.output_root = Path(self.output_root).expanduser().absolute()
        self.model_roots = tuple(Path(r).expanduser().absolute() for r in self.model_roots)
        self.allowed_models = tuple(dict.fromkeys(m.strip() for m in self.allowed_models if m.strip()))
        if self.public and not self.allowed_models:
            raise ValueError("a public studio needs at least one allowed model")

    @property
    def public(self) -> bool:
        return self.mode == PUBLIC

    def read_roots(self) -> tuple:
        return (self.output_root, cache_dir(), *self.model_roots)

    # ---- models -------------------------------------------------------------------------------------

    def model_source(self, model_id: str) -> str:
        """What to hand `load_model` for a visitor's model: an allowed id, or (lab) a Hub id or a folder
        inside the read roots. A relative name that exists under the output root means that folder."""
        model_id = (model_id or "").strip()
        if not model_id:
            raise StudioError("No model given: pick one" + (f" of: {', '.join(self.allowed_models)}"
                                                         if self.public else " (a Hub repo id or a folder)"))
        if self.public:
            if model_id not in self.allowed_models:
                raise StudioError(f"{model_id!r} is not offered here; pick one of: {', '.join(self.allowed_models)}")
            return model_id
        path = Path(model_id).expanduser()
        if not path.is_absolute() and (self.output_root / path).exists():
            path = self.output_root / path
        elif HUB_ID.match(model_id) and not path.exists():
            return model_id  # a Hugging Face repo id
        if not any(is_inside(path, root) for root in self.read_roots()):
            roots = ", ".join(str(r) for r in self.read_roots())
            raise StudioError(
                f"{model_id!r} is outside the folders this studio loads models from ({roots}); "
                "save it under the output folder, or start the studio with --model-dir FOLDER"
            )
        return str(path)

    # ---- folders written ----------------------------------------------------------------------------

    def output_folder(self, name: str) -> Path:
        """A new folder under the output root for `name` (relative names are resolved inside it)."""
        if self.public:
            raise StudioError("A public studio saves nothing on the server; download the zip instead")
        name = (name or "").strip()
        if not name:
            raise StudioError(f"Give a folder name to save in (it goes under {self.output_root})")
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.output_root / path
        if not is_inside(path, self.output_root):
            raise StudioError(
                f"{name!r} is outside the output folder {self.output_root} (through '..', an absolute path or a "
                "symlink); give a name inside it, e.g. kokoro-8bit"
            )
        if path.is_file():
            raise StudioError(f"{path} is an existing file; pick a new folder name")
        if path.is_dir() and any(path.iterdir()):
            raise StudioError(f"{path} exists and is not empty; pick a new folder name")
        self.output_root.mkdir(parents=True, exist_ok=True)
        return path

    # ---- voices and uploads -------------------------------------------------------------------------

    def check_voice(self, voice: str, names, model_folder: Path) -> str:
        """`voice` if every term of it is a voice name, or a voice file from the model's folder or an upload."""
        text = (voice or "").strip()
        terms = [text] if text in names or Path(text).suffix.lower() in VOICE_SUFFIXES else re.split(r"[+,]", text)
        for term in terms:
            term = re.sub(r"\(\s*[^()]*\)\s*$", "", term).strip()  # a blend weight, `name(2)`
            path_like = (os.sep in term or Path(term).suffix.lower() in VOICE_SUFFIXES
                         or Path(term).expanduser().exists())
            if term in names or not path_like:
                continue  # a name (unknown names are the voice bank's to report)
            roots = [model_folder] + ([self.upload_root] if self.upload_root else [])
            if not any(is_inside(Path(term).expanduser(), root) for root in roots):
                raise StudioError(
                    f"The voice file {Path(term).name!r} is not one of this model's voices or an upload; pick a "
                    "voice by name or upload the file"
                )
            check_file_size(term, MAX_VOICE_UPLOAD_MB, "voice file")
        return text

    def check_splitter(self, value: str) -> Optional[str]:
        """The regex for a named splitter; in lab mode any other value is taken as a regex of its own."""
        value = DEFAULT_SPLITTER if value is None else value
        if value in SPLITTERS:
            return SPLITTERS[value]
        if self.public:
            raise StudioError(f"Unknown splitter {value!r}; choose one of: {', '.join(SPLITTERS)}")
        return value


def check_file_size(path, limit_mb: float, what: str):
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > limit_mb * 2**20:
        raise StudioError(f"The {what} is {size / 2**20:.1f} MB; the studio takes at most {limit_mb:g} MB")


def check_audio_upload(path) -> dict:
    """Check an uploaded clip by decoding its header (not by its name): size, sample rate and duration.
    Returns soundfile's info as a dict."""
    check_file_size(path, MAX_AUDIO_UPLOAD_MB, "audio upload")
    try:
        info = soundfile.info(str(path))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError for anything it can't decode
        raise StudioError(f"{Path(path).name} is not audio the studio can read (WAV, FLAC, OGG or MP3): {e}") from None
    low, high = AUDIO_RATES
    if not low <= info.samplerate <= high:
        raise StudioError(f"{Path(path).name} declares {info.samplerate} Hz; the studio takes {low} to {high} Hz")
    if info.frames <= 0 or info.duration > MAX_AUDIO_UPLOAD_S:
        raise StudioError(f"{Path(path).name} lasts {info.duration:.1f} s; upload a clip of 1 to "
                          f"{MAX_AUDIO_UPLOAD_S} s (CSM hears the first 30 s)")
    return {"sample_rate": info.samplerate, "duration_s": info.duration, "channels": info.channels}


def check_text(text: str, what="text", limit=MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str) or not text.strip():
        raise StudioError(f"The {what} is empty: type something to speak.")
    if len(text) > limit:
        raise StudioError(f"The {what} has {len(text)} characters; the studio takes at most {limit}. "
                          "Split it, or use `python -m mlx_tts.generate` for long texts.")
    return text


def check_seed(seed) -> int:
    """A seed as an int in 0..2^32-1 (MLX's range); numbers written as text are accepted."""
    try:
        value = float(seed)
        if value != int(value):
            raise ValueError
        value = int(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError(f"The seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise StudioError(f"The seed must be from 0 to {MAX_SEED}, got {value}")
    return value


def check_choice(value, valid, what: str) -> int:
    """An int setting among `valid`, given as a number or as its text ("8")."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = None
    if number not in valid:
        raise StudioError(f"{what} must be one of {', '.join(map(str, valid))}, got {value!r}")
    return number


def check_bits(value) -> int:
    return check_choice(value, VALID_BITS, "Bits")


def check_group_size(value) -> int:
    return check_choice(value, VALID_GROUP_SIZES, "Group size")


# ---- this run's scratch folder ----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class WorkArea:
    """`<tmp>/mlx_tts_studio/<pid>-<random>/`: this run's takes, quantized models and zips. Folders of runs whose
    process is gone (killed, crashed) are deleted at start; this run's at exit."""

    base: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / WORK_AREA)
    path: Path = None

    def __post_init__(self):
        self.base.mkdir(parents=True, exist_ok=True)
        for old in self.base.iterdir():
            pid = old.name.split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.base))
        atexit.register(shutil.rmtree, self.path, True)
