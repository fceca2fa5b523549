"""An optimized BLAS for the `mlx-cpu` build of MLX on Linux.

The `mlx-cpu` wheel links libmlx against the netlib reference BLAS, which is far slower than an optimized one
(figures in `bench/README.md`). libmlx takes only `cblas_sgemm`, `cblas_dgemm` and `cblas_cgemm` from it, and
Python loads extension modules with RTLD_NOW, so these symbols are bound when `mlx.core` is imported, looking
first in the process's global symbol scope. `enable()` puts a library that exports them there (ctypes with
RTLD_GLOBAL), which redirects every MLX matmul and convolution GEMM to it: no LD_PRELOAD, no re-exec.
It must therefore run before the first `import mlx.core`; `mlx_tts.accelerate()` calls it.

Which library (`MLX_TTS_BLAS`):
- `auto` (default): OpenBLAS from the `scipy-openblas32` wheel (a requirement on Linux). Its symbols carry
  a `scipy_` prefix, so a small C shim (`ext/blas_shim.c`) exports the standard names over it; the shim is
  compiled once with the system C compiler and cached (see `mlx_tts.ext.build`). Without a
  compiler, a system OpenBLAS that exports the standard names (Debian: `libopenblas0-pthread`) is used.
- `off`: leave MLX's bundled reference BLAS alone.
- a path: load that library; it must export `cblas_sgemm`, `cblas_dgemm` and `cblas_cgemm`.

Nothing happens off Linux, when a CUDA build of MLX (`mlx-cuda-12` / `mlx-cuda-13`) is installed (its
default device is the GPU, whose kernels never call a CPU BLAS), or when `mlx.core` was imported first.

Threads: OpenBLAS splits a GEMM statically over its threads, so on a machine shared with other work a
multi-threaded OpenBLAS stalls whenever one of its threads gets no CPU time. So OpenBLAS itself runs
single-threaded, and the shim cuts large sgemm calls into blocks that a small thread pool takes one at a time
(`ext/blas_shim.c`; `MLX_TTS_THREADS` threads, default: the CPUs this process may use): a thread that gets no
CPU time just takes fewer blocks. With `OPENBLAS_NUM_THREADS` set, OpenBLAS threads as told instead. A system
OpenBLAS (no shim) runs single-threaded unless that variable says otherwise.
On CPUs with AVX-512, `OPENBLAS_CORETYPE` is `SkylakeX` (its AVX-512 kernels) while the library loads, unless
set: OpenBLAS 0.3.34 does not recognize AMD Zen 5 and would run its AVX2 kernels. The variable is restored
afterwards, so child processes inherit the environment as it was.
"""

import ctypes
import ctypes.util
import importlib.metadata
import logging
import os
import sys

from .ext.build import BuildError, build_library

logger = logging.getLogger("mlx_tts")

_SYMBOLS = ("cblas_sgemm", "cblas_dgemm", "cblas_cgemm")
_CUDA_BUILDS = ("mlx-cuda-12", "mlx-cuda-13", "mlx-cuda")
_active = None
_decided = False
_shim = None  # path of the compiled scipy-openblas32 shim, once built
_note = ""


def active():
    """Path of the BLAS library that MLX's CPU GEMMs use, or None when it is MLX's bundled one."""
    return _active


def note() -> str:
    """Why `enable()` chose what it did (empty before it ran)."""
    return _note


def enable():
    """Load the BLAS chosen by `MLX_TTS_BLAS` into the global symbol scope (once); return its path or None.

    `mlx_tts.accelerate()` calls this; it must run before `import mlx.core`."""
    global _active, _decided, _note
    if _decided:
        return _active
    _decided = True
    choice = os.environ.get("MLX_TTS_BLAS", "auto").strip()
    if choice.lower() == "off":
        _note = "MLX_TTS_BLAS=off: MLX's bundled BLAS"
        return None
    skipped = _not_applicable()
    if skipped:
        _note = skipped
        return None
    paths = [choice] if choice.lower() != "auto" else _candidates()
    for path in paths:
        try:
            library = _load_global(str(path))
        except OSError as e:
            logger.warning("MLX_TTS_BLAS: cannot load %s (%s)", path, e)
            continue
        missing = [name for name in _SYMBOLS if not hasattr(library, name)]
        if missing:
            logger.warning("MLX_TTS_BLAS: %s does not export %s", path, ", ".join(missing))
            continue
        single = path != _shim and "OPENBLAS_NUM_THREADS" not in os.environ  # see "Threads" above
        if single and hasattr(library, "openblas_set_num_threads"):
            library.openblas_set_num_threads(1)
        _active = str(path)
        _note = "MLX_TTS_BLAS=" + ("auto" if choice.lower() == "auto" else "path") + (
            ": scipy-openblas32 through the shim" if path == _shim else ""
        )
        logger.debug("MLX CPU BLAS: %s", _active)
        return _active
    _note = "no optimized BLAS could be loaded (see the warnings): MLX's bundled BLAS"
    logger.warning(
        "no optimized BLAS for MLX: its matmuls stay ~40x slower. Install a C compiler (for the "
        "scipy-openblas32 shim) or Debian's libopenblas0-pthread, or set MLX_TTS_BLAS=off to silence this"
    )
    return None


def _load_global(path: str):
    """`ctypes.CDLL(path, RTLD_GLOBAL)`, with `OPENBLAS_CORETYPE` set for OpenBLAS's start-up only (restored)."""
    previous = os.environ.get("OPENBLAS_CORETYPE")
    if previous is None and _has_avx512():
        # OpenBLAS 0.3.34 does not recognize every AVX-512 CPU (AMD Zen 5 among them) and then runs its
        # AVX2 (Haswell) kernels, at about half the speed; it reads the variable once, when it loads.
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    try:
        return ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    finally:
        if previous is None:
            os.environ.pop("OPENBLAS_CORETYPE", None)


def _applies() -> bool:
    return _not_applicable() is None


def _not_applicable():
    """Why the BLAS swap does not apply to this process, or None when it does."""
    if sys.platform != "linux":
        return f"not on Linux ({sys.platform}): MLX's own BLAS"
    if "mlx.core" in sys.modules:
        logger.warning(
            "mlx.core was imported before mlx_tts.accelerate(), so MLX keeps the slow reference BLAS of the "
            "mlx-cpu wheel: call mlx_tts.accelerate() first (or set MLX_TTS_BLAS=off to silence this)"
        )
        return "mlx.core was imported first: too late to rebind its BLAS"
    for name in _CUDA_BUILDS:
        try:
            importlib.metadata.version(name)
            return f"{name} is installed: its GPU kernels call no CPU BLAS"
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def _has_avx512() -> bool:
    """Whether the CPU has the AVX-512 subsets that OpenBLAS's SkylakeX kernels use."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= set(flags)


def _candidates():
    try:
        yield _scipy_openblas_shim()
    except (ImportError, BuildError) as e:
        logger.info("scipy-openblas32 not usable for MLX (%s); looking for a system OpenBLAS", e)
    system = ctypes.util.find_library("openblas")
    if system:
        yield system


def _scipy_openblas_shim():
    global _shim
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    source = os.path.join(os.path.dirname(__file__), "ext", "blas_shim.c")
    link = [f"-L{lib_dir}", f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib_dir}", "-pthread"]
    _shim = build_library("blas_shim", [source], link, language="c")
    return _shim
