"""Kokoro voice packs: reading them in every format they ship in, naming, blending.

A voice pack is a float32 array [510, 1, 256]: one style vector per utterance length. Row `n - 1` styles an
utterance of n phonemes (its first 128 values condition the decoder, the last 128 the prosody predictor).

Files holding one voice, named by their stem: `.pt` (a PyTorch tensor), `.safetensors` (key `voice`),
`.npy`. Files holding many voices, one per key: `.npz`, and kokoro-onnx's `voices-v1.0.bin` (an npz).
"""

import re
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...errors import MlxTtsError
from ...torch_io import CheckpointError, load_torch_file

STYLE_DIM = 256
SINGLE_VOICE_SUFFIXES = (".pt", ".safetensors", ".npy")
MULTI_VOICE_SUFFIXES = (".npz", ".bin")
VOICE_SUFFIXES = SINGLE_VOICE_SUFFIXES + MULTI_VOICE_SUFFIXES

# One term of a blend: `name`, `name(2)` or `name(0.5)`, spaces allowed around each part.
_TERM = re.compile(r"^\s*(?P<voice>[^()]+?)\s*(?:\(\s*(?P<weight>[^()]*?)\s*\))?\s*$")


class VoiceError(MlxTtsError, ValueError):
    pass


def _as_pack(array, source) -> np.ndarray:
    """Check one voice's array and return it as float32 [rows, 1, 256]."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, None, :]
    if array.ndim != 3 or array.shape[1:] != (1, STYLE_DIM) or array.shape[0] == 0:
        raise VoiceError(f"{source}: a voice must have shape [rows, 1, {STYLE_DIM}], got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
        raise VoiceError(f"{source}: a voice must hold floats, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise VoiceError(f"{source}: the voice holds NaN or infinite values")
    return array


def _read_safetensors(path: Path) -> np.ndarray:
    try:
        tensors = mx.load(str(path))
    except Exception as e:  # mx.load raises plain RuntimeError/ValueError for bad files
        raise VoiceError(f"{path}: not a readable safetensors file ({e})") from None
    if "voice" not in tensors:
        raise VoiceError(f"{path}: no tensor named 'voice' (found: {', '.join(sorted(tensors)) or 'none'})")
    return np.array(tensors["voice"].astype(mx.float32))


def _read_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise VoiceError(f"{path}: not a readable numpy voice file ({e})") from None


def read_voices(path) -> dict:
    """{name: float32 [rows, 1, 256]} for every voice in a voice file."""
    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"{path}: no such voice file")
    suffix = path.suffix.lower()
    if suffix == ".pt":
        try:
            return {path.stem: _as_pack(load_torch_file(path), path)}
        except CheckpointError as e:
            raise VoiceError(str(e)) from None
    if suffix == ".safetensors":
        return {path.stem: _as_pack(_read_safetensors(path), path)}
    if suffix in (".npy", ".npz", ".bin"):
        loaded = _read_numpy(path)
        if isinstance(loaded, np.ndarray):
            return {path.stem: _as_pack(loaded, path)}
        with loaded:
            return {name: _as_pack(loaded[name], f"{path}[{name}]") for name in sorted(loaded.files)}
    raise VoiceError(f"{path}: unsupported voice format '{suffix}' (supported: {', '.join(VOICE_SUFFIXES)})")


def save_voice(path, pack):
    """Write one voice as `.safetensors` with the key `voice`."""
    pack = _as_pack(np.asarray(pack), path)
    mx.save_safetensors(str(path), {"voice": mx.array(pack)})


def style_for_length(pack, n_phonemes: int) -> mx.array:
    """The style vector [1, 256] for an utterance of `n_phonemes` phonemes (row n - 1, clamped to the pack)."""
    row = min(max(int(n_phonemes) - 1, 0), pack.shape[0] - 1)
    return mx.array(pack[row])


def _parse_blend(spec: str) -> list:
    """`a(2)+b(1)` or `a, b` -> [(voice, weight)], weights normalised to sum to 1."""
    terms = []
    for term in re.split(r"[+,]", spec):
        match = _TERM.match(term)
        if not match:
            raise VoiceError(
                f"can't read {term.strip()!r} in the voice spec {spec!r}; write e.g. af_bella(2)+af_sky(1)"
            )
        weight = match["weight"]
        try:
            value = 1.0 if weight is None else float(weight)
        except ValueError:
            raise VoiceError(f"weight {weight!r} of {match['voice']!r} in {spec!r} is not a number") from None
        if not (np.isfinite(value) and value > 0):
            raise VoiceError(f"weight {weight!r} of {match['voice']!r} in {spec!r} must be a positive number")
        terms.append((match["voice"], value))
    total = sum(weight for _, weight in terms)
    return [(voice, weight / total) for voice, weight in terms]


class VoiceBank:
    """The voices of a model folder (`<model_dir>/voices/`), plus any voice file given by path."""

    def __init__(self, model_dir):
        self.voice_dir = Path(model_dir) / "voices"
        self._index = None  # name -> file that holds it
        self._loaded = {}  # voice file (resolved path) -> {name: pack}

    def _files(self) -> dict:
        if self._index is None:
            index = {}
            files = sorted(self.voice_dir.iterdir()) if self.voice_dir.is_dir() else []
            for path in files:
                suffix = path.suffix.lower()
                if suffix in SINGLE_VOICE_SUFFIXES:
                    index.setdefault(path.stem, path)
                elif suffix in MULTI_VOICE_SUFFIXES:  # listing these means reading them
                    for name in self._read(path):
                        index.setdefault(name, path)
            self._index = index
        return self._index

    def names(self) -> list:
        return sorted(self._files())

    def _read(self, path: Path) -> dict:
        key = path.resolve()
        if key not in self._loaded:
            self._loaded[key] = read_voices(path)
        return self._loaded[key]

    def _load(self, voice: str) -> np.ndarray:
        files = self._files()
        if voice in files:
            return self._read(files[voice])[voice]
        path = Path(voice).expanduser()
        if path.is_file():
            packs = self._read(path)
            if len(packs) != 1:
                raise VoiceError(
                    f"{path} holds {len(packs)} voices ({', '.join(packs)}); put it in a model's voices/ folder "
                    "and pick one by name"
                )
            return next(iter(packs.values()))
        available = ", ".join(self.names()) or f"none, {self.voice_dir} has no voice files"
        raise VoiceError(f"unknown voice {voice!r} (not a voice name or a voice file); available: {available}")

    def resolve(self, spec) -> mx.array:
        """The voice pack [rows, 1, 256] for a name, a path, a weighted blend `af_bella(2)+af_sky(1)`
        or a comma list `af_bella,af_sky` (equal weights)."""
        text = str(spec).strip()
        if not text:
            raise VoiceError("the voice is empty; available: " + ", ".join(self.names()))
        if text in self._files() or Path(text).expanduser().is_file():
            return mx.array(self._load(text))
        terms = _parse_blend(text)
        packs = [(self._load(voice), weight) for voice, weight in terms]
        shapes = {pack.shape for pack, _ in packs}
        if len(shapes) > 1:
            raise VoiceError(f"can't blend voices of different shapes in {text!r}: {sorted(shapes)}")
        return mx.array(sum(weight * pack for pack, weight in packs).astype(np.float32))
