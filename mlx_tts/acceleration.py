"""`mlx_tts.accelerate()`: the process-wide CPU set-up the engine benefits from, done only when asked.

Importing `mlx_tts` changes nothing in the process. `accelerate()` does what an application wants once, first
thing, before anything imports `mlx.core`:
- on Linux's `mlx-cpu` build, loads an optimized BLAS into the global symbol scope so that MLX's GEMMs bind to
  it (`mlx_tts.cpu_blas`; the scipy-openblas32 shim is compiled on the first call and cached;
  `MLX_TTS_BLAS=off` turns it off). After `import mlx.core` this is too late: MLX keeps its reference BLAS;
- on glibc, pins malloc's mmap threshold so that freed activations return to the OS (`mlx_tts.malloc`).
It reports the native kernels' setting too; they are built on first use, or ahead by `python -m mlx_tts.ext build`.

This module imports nothing heavy (no MLX, no ctypes) until `accelerate()` runs.
"""

import os
import threading
from typing import NamedTuple


class Acceleration(NamedTuple):  # not a dataclass: `dataclasses` loads a C extension (_opcode) on import
    """What `accelerate()` did."""

    blas: str | None  # path of the BLAS library MLX's CPU GEMMs use, None for MLX's bundled one
    blas_note: str  # why that library (or why none)
    mmap_threshold: int | None  # bytes glibc's mmap threshold was pinned to, None when left alone
    kernels: str  # the native CPU kernels' setting (MLX_TTS_EXT)


_lock = threading.Lock()
_done = None  # the first call's Acceleration


def accelerate() -> Acceleration:
    """Set up the process for the engine (see the module docstring); call it before `import mlx.core`.

    Idempotent and thread-safe: the first call does the work, every call returns its report."""
    global _done
    with _lock:
        if _done is None:
            from . import cpu_blas, malloc

            blas = cpu_blas.enable()
            _done = Acceleration(
                blas=blas,
                blas_note=cpu_blas.note(),
                mmap_threshold=malloc.fix_mmap_threshold(),
                kernels=_kernels_setting(),
            )
        return _done


def _kernels_setting() -> str:
    setting = os.environ.get("MLX_TTS_EXT", "on").strip().lower()
    if setting == "off":
        return "off (MLX_TTS_EXT=off): MLX ops"
    which = {"portable": "portable build", "avx2": "default build, held at AVX2"}.get(setting, "default build")
    return f"on ({which}), compiled on first use on the CPU device or by `python -m mlx_tts.ext build`"
