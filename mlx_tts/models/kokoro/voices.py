"""Kokoro voice packs: reading them in every format they ship in, naming, blending.

A voice pack is a float32 array [510, 1, 256]: one style vector per utterance length. Row `n - 1` styles an
utterance of n phonemes (its first 128 values condition the decoder, the last 128 the prosody predictor).

Files holding one voice, named by their stem: `.pt` (a PyTorch tensor), `.safetensors` (key `voice`),
`.npy`. Files holding many voices, one per key: `.npz`, and kokoro-onnx's `voices-v1.0.bin` (an npz).
"""

import json
import re
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import mlx.core as mx
import numpy as np

from ...errors import MlxTtsError
from ...torch_io import CheckpointError, load_torch_file

STYLE_DIM = 256
MAX_ROWS = 510  # Kokoro's packs: one row per utterance length, up to its 510-phoneme limit
MAX_VOICE_BYTES = MAX_ROWS * STYLE_DIM * 8  # the largest pack a file can hold (float64)
MAX_STYLE_VALUE = 100.0  # real voices stay within about +-5; larger values are damaged bytes
VOICE_CACHE_BYTES = 64 << 20  # packs kept in memory, least recently used dropped first (~125 voices)
SINGLE_VOICE_SUFFIXES = (".pt", ".safetensors", ".npy")
MULTI_VOICE_SUFFIXES = (".npz", ".bin")
VOICE_SUFFIXES = SINGLE_VOICE_SUFFIXES + MULTI_VOICE_SUFFIXES
SAFETENSORS_DTYPES = {"F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32, "F64": np.float64}
MAX_SAFETENSORS_HEADER = 1 << 20  # a voice file's header is a few hundred bytes

# One term of a blend: `name`, `name(2)` or `name(0.5)`, spaces allowed around each part.
_TERM = re.compile(r"^\s*(?P<voice>[^()]+?)\s*(?:\(\s*(?P<weight>[^()]*?)\s*\))?\s*$")


class VoiceError(MlxTtsError, ValueError):
    pass


def _check_header(shape, dtype, source):
    """Refuse a voice by the shape and dtype its file declares, before its data is read."""
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise VoiceError(f"{source}: the file declares a shape that is not a list of sizes: {shape!r}") from None
    rows = shape[0] if len(shape) in (2, 3) else 0
    if shape[1:] not in ((STYLE_DIM,), (1, STYLE_DIM)) or not 1 <= rows <= MAX_ROWS:
        raise VoiceError(
            f"{source}: a voice has shape [rows, 1, {STYLE_DIM}] or [rows, {STYLE_DIM}] with 1 to {MAX_ROWS} "
            f"rows, got {list(shape)}"
        )
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16) or dtype.itemsize > 8:
        raise VoiceError(f"{source}: a voice must hold floats, got {dtype}")


def _as_pack(array, source) -> np.ndarray:
    """Check one voice's array and return it as float32 [rows, 1, 256]."""
    array = np.asarray(array)
    _check_header(array.shape, array.dtype, source)
    array = array.astype(np.float32).reshape(-1, 1, STYLE_DIM)
    if not np.isfinite(array).all():
        raise VoiceError(f"{source}: the voice holds NaN or infinite values (a damaged file)")
    if np.abs(array).max() > MAX_STYLE_VALUE:
        raise VoiceError(
            f"{source}: the voice holds values up to {np.abs(array).max():.3g}; real voices stay within about "
            f"+-5 (a damaged file)"
        )
    zero_rows = np.flatnonzero(~array.any(axis=(1, 2)))
    if zero_rows.size:
        raise VoiceError(
            f"{source}: {zero_rows.size} of the voice's {len(array)} rows are all zero, from row {zero_rows[0]} "
            "(a damaged or truncated file: it would make silence)"
        )
    return array


def _read_pt(path: Path) -> np.ndarray:
    seen = []

    def check(shape, dtype, nbytes):
        if seen:
            raise VoiceError(f"{path}: holds more than one tensor; a .pt voice file holds one")
        seen.append(shape)
        _check_header(shape, dtype, path)
        if nbytes > MAX_VOICE_BYTES:
            raise VoiceError(f"{path}: the voice's data spans {nbytes} bytes; a voice takes at most {MAX_VOICE_BYTES}")

    try:
        tensor = load_torch_file(path, check_tensor=check)
    except CheckpointError as e:
        raise VoiceError(str(e)) from None
    if not isinstance(tensor, np.ndarray):
        raise VoiceError(f"{path}: holds a {type(tensor).__name__}, not a voice tensor")
    return tensor


def _read_safetensors(path: Path) -> np.ndarray:
    """The tensor `voice`, located and checked through the file's JSON header before its data is read."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 2 <= size <= MAX_SAFETENSORS_HEADER:
            raise VoiceError(f"{path}: not a readable safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
            entry = header.get("voice")
            keys = sorted(k for k in header if k != "__metadata__")
        except (ValueError, AttributeError):
            raise VoiceError(f"{path}: not a readable safetensors file (its header is not a JSON object)") from None
        if entry is None:
            raise VoiceError(f"{path}: no tensor named 'voice' (found: {', '.join(keys) or 'none'})")
        try:
            dtype, shape, (begin, end) = SAFETENSORS_DTYPES.get(entry["dtype"]), entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise VoiceError(f"{path}: the header entry of 'voice' is malformed: {entry!r}") from None
        if dtype is None:
            raise VoiceError(f"{path}: a voice must hold floats, got {entry['dtype']}")
        _check_header(shape, dtype, path)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not (isinstance(begin, int) and begin >= 0 and end - begin == nbytes):
            raise VoiceError(f"{path}: 'voice' declares bytes {begin}..{end}, its shape needs {nbytes}")
        f.seek(8 + size + begin)
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise VoiceError(f"{path}: truncated: 'voice' needs {nbytes} bytes, the file holds {len(data)}")
    return np.frombuffer(data, dtype).reshape(shape)


def _read_npy(f, source) -> np.ndarray:
    """One .npy (a file or a zip member), its header checked before its data is read."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = readers[version](f)
        _check_header(shape, dtype, source)
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, VoiceError):
            raise
        raise VoiceError(f"{source}: not a readable numpy voice file ({e})") from None


def _npz_members(archive: zipfile.ZipFile) -> dict:
    """{voice name: member} of an .npz (kokoro-onnx's voices-v1.0.bin is one)."""
    return {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise VoiceError(f"{path}: not a readable numpy voice file ({e})") from None


def _check_file(path: Path) -> str:
    if not path.is_file():
        raise VoiceError(f"{path}: no such voice file")
    suffix = path.suffix.lower()
    if suffix not in VOICE_SUFFIXES:
        raise VoiceError(f"{path}: unsupported voice format '{suffix}' (supported: {', '.join(VOICE_SUFFIXES)})")
    return suffix


def voice_names(path) -> list:
    """The names of the voices a voice file holds, read without reading the voices."""
    path = Path(path)
    suffix = _check_file(path)
    if suffix in SINGLE_VOICE_SUFFIXES or not zipfile.is_zipfile(path):
        return [path.stem]
    with _open_zip(path) as archive:
        return sorted(_npz_members(archive))


def read_voice(path, name: str) -> np.ndarray:
    """The voice `name` of a voice file, float32 [rows, 1, 256]; its size is checked before it is read."""
    path = Path(path)
    suffix = _check_file(path)
    if suffix == ".pt":
        return _as_pack(_read_pt(path), path)
    if suffix == ".safetensors":
        return _as_pack(_read_safetensors(path), path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return _as_pack(_read_npy(f, path), path)
    with _open_zip(path) as archive:
        members = _npz_members(archive)
        if name not in members:
            raise VoiceError(f"{path} has no voice {name!r} (it holds: {', '.join(sorted(members)) or 'none'})")
        with archive.open(members[name]) as f:
            return _as_pack(_read_npy(f, f"{path}[{name}]"), f"{path}[{name}]")


def read_voices(path) -> dict:
    """{name: float32 [rows, 1, 256]} for every voice in a voice file."""
    return {name: read_voice(path, name) for name in voice_names(path)}


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


class PackCache:
    """Voice packs read from files, keyed by file, voice and the file's size and mtime (an edited file is read
    again), holding at most `max_bytes`: the least recently used are dropped first. Shared by threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._packs = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, name: str) -> np.ndarray:
        stat = path.stat()
        key = (path.resolve(), name, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._packs:
                self._packs.move_to_end(key)
                return self._packs[key]
        pack = read_voice(path, name)
        pack.flags.writeable = False  # shared by every bank and caller
        with self._lock:
            if key not in self._packs:
                self._packs[key] = pack
                self.nbytes += pack.nbytes
            while self.nbytes > self.max_bytes and len(self._packs) > 1:
                self.nbytes -= self._packs.popitem(last=False)[1].nbytes
        return pack


VOICE_CACHE = PackCache(VOICE_CACHE_BYTES)


class VoiceBank:
    """The voices of a model folder (`<model_dir>/voices/`), plus any voice file given by path."""

    def __init__(self, model_dir):
        self.voice_dir = Path(model_dir) / "voices"
        self._index = None  # name -> file that holds it

    def _files(self) -> dict:
        if self._index is None:
            index = {}
            files = sorted(self.voice_dir.iterdir()) if self.voice_dir.is_dir() else []
            for path in files:
                if path.suffix.lower() in VOICE_SUFFIXES:
                    for name in voice_names(path):
                        index.setdefault(name, path)
            self._index = index
        return self._index

    def names(self) -> list:
        return sorted(self._files())

    def _load(self, voice: str) -> np.ndarray:
        files = self._files()
        if voice in files:
            return VOICE_CACHE.get(files[voice], voice)
        path = Path(voice).expanduser()
        if path.is_file():
            names = voice_names(path)
            if len(names) != 1:
                raise VoiceError(
                    f"{path} holds {len(names)} voices ({', '.join(names)}); put it in a model's voices/ folder "
                    "and pick one by name"
                )
            return VOICE_CACHE.get(path, names[0])
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
