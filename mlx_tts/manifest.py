"""Manifests of the model folders the engine writes: every file's size and SHA-256, checked when loading.

`write_manifest` records the files of a folder in `MANIFEST`; `verify_manifest` compares them on every load:
sizes always (a stat per file), hashes only for files whose stat (size, mtime, ctime, inode) changed since the
last verification that passed. Hashing the embedded Kokoro's 325 MB of weights takes ~0.24 s, as long as a warm
load itself, so it is done once per file state; a write into a file, truncation or replacement changes its
stat, so it is hashed again on the next load. The stamps of passed verifications live in the cache
(`<cache>/verified/`), never in the model folder.
"""

import hashlib
import json
import os
from pathlib import Path

from .cache import cache_dir
from .errors import ModelLoadError

MANIFEST = "mlx_tts-manifest.json"
FORMAT = 1


class DamagedFolderError(ModelLoadError):
    """A file of a model folder differs from the folder's manifest: missing, resized or with other bytes."""

    def __init__(self, folder: Path, name: str, problem: str):
        self.folder, self.name, self.problem = folder, name, problem
        super().__init__(
            f"{folder / name}: {problem}, so the file is damaged or was changed after the folder was written "
            f"(its manifest is {folder / MANIFEST}). Delete the folder {folder} and write it again (save_model, "
            f"python -m mlx_tts.convert) or download it again from where it came from; to keep a deliberate edit, "
            f"delete {folder / MANIFEST} instead."
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def _write_json(path: Path, data: dict):
    """Write whole or not at all: concurrent loads never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def write_manifest(folder, names=None) -> Path:
    """Record `names` (paths relative to `folder`; all of its files when None) with their sizes and hashes."""
    folder = Path(folder)
    names = _files(folder) if names is None else sorted(names)
    files = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)} for name in names}
    _write_json(folder / MANIFEST, {"format": FORMAT, "files": files})
    return folder / MANIFEST


def read_manifest(folder) -> dict:
    """{name: {"size", "sha256"}} of the folder's manifest; {} when it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not all({"size", "sha256"} <= set(f) for f in files.values()):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DamagedFolderError(Path(folder), MANIFEST, f"the manifest can't be read ({e})") from None
    return files


def covers(folder) -> bool:
    """Whether the manifest lists exactly the folder's files, at their sizes (what a build must leave)."""
    folder = Path(folder)
    try:
        files = read_manifest(folder)
    except DamagedFolderError:
        return False
    return sorted(files) == _files(folder) and all((folder / n).stat().st_size == f["size"] for n, f in files.items())


def _stamp(stat) -> list:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _stamps_path(folder: Path) -> Path:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "verified" / f"{key}.json"


def verify_manifest(folder) -> bool:
    """False when the folder has no manifest; True when its files match it; else a DamagedFolderError that
    names the first file that differs."""
    folder = Path(folder)
    files = read_manifest(folder)
    if not files:
        return False
    digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    stamps_path = _stamps_path(folder)
    try:
        stamps = json.loads(stamps_path.read_text(encoding="utf-8"))
        verified = stamps["files"] if stamps.get("manifest") == digest else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        verified = {}
    current = {}
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise DamagedFolderError(folder, name, "the file is missing")
        stat = path.stat()
        if stat.st_size != expected["size"]:
            raise DamagedFolderError(
                folder, name, f"the file has {stat.st_size} bytes where the manifest records {expected['size']}"
            )
        current[name] = _stamp(stat)
        if verified.get(name) != current[name] and sha256_file(path) != expected["sha256"]:
            raise DamagedFolderError(
                folder, name, f"its bytes differ from the manifest's (SHA-256 {expected['sha256'][:16]}...)"
            )
    if current != verified:
        stamps_path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(stamps_path, {"folder": str(folder.resolve()), "manifest": digest, "files": current})
    return True
