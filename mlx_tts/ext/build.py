"""Compile a small native library once, on first use, into the cache.

The engine installs with pip alone, so its native parts ship as source and are built here with the system
compiler (`cc` / `c++`, or `$CC` / `$CXX`). A build is cached under `$MLX_TTS_CACHE/ext` (default
`~/.cache/mlx_tts/ext`), named by a hash of everything that affects it, so a new MLX, nanobind, Python or
source file gets a fresh build. Without a compiler `build_library` raises `BuildError`, and the callers fall
back to code that needs none.

This module must not import `mlx.core`: `mlx_tts.cpu_blas` uses it before MLX is loaded.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..cache import cache_dir
from ..errors import MlxTtsError


class BuildError(MlxTtsError, RuntimeError):
    """A native library could not be compiled (no compiler, or the compiler failed)."""


def cache_folder() -> Path:
    return cache_dir() / "ext"


def find_compiler(language: str) -> str:
    """The path of the `language` ("c" or "c++") compiler that builds use; BuildError if there is none."""
    variable, default = ("CXX", "c++") if language == "c++" else ("CC", "cc")
    name = os.environ.get(variable, default)
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"no {language} compiler: `{name}` is not on PATH (set ${variable} to use another)")
    return path


def build_library(
    name: str, sources: list, args: list, language: str = "c", suffix: str = ".so", depends_on: tuple = ()
) -> Path:
    """Compile `sources` with `args` (flags, include and link options) into a cached shared library.

    `depends_on`: versions of what the binary depends on without it showing in the sources or arguments.
    """
    compiler = find_compiler(language)
    key = hashlib.sha256()
    for part in [compiler, language, *map(str, args), *depends_on]:
        key.update(part.encode() + b"\0")
    for source in sources:
        key.update(Path(source).read_bytes())
    target = cache_folder() / f"{name}-{key.hexdigest()[:16]}{suffix}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so that concurrent first uses never see a partial file.
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{name}-", suffix=suffix)
    os.close(fd)
    command = [compiler, "-shared", "-fPIC", "-O2", *map(str, sources), *map(str, args), "-o", partial]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"building {name} failed:\n{' '.join(command)}\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
