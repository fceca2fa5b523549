"""An optimized BLAS for the `mlx-cpu` build of MLX on Linux.

The `mlx-cpu` wheel links libmlx against the netlib reference BLAS (~6 GFLOP/s for a float32 GEMM on a
modern core). libmlx takes only `cblas_sgemm`, `cblas_dgemm` and `cblas_cgemm` from it, and Python loads
extension modules with RTLD_NOW, so these symbols are bound when `mlx.core` is imported, looking first in
the process's global symbol scope. `enable()` puts a library that exports them there (ctypes with
RTLD_GLOBAL), which redirects every MLX matmul and convolution GEMM to it: no LD_PRELOAD, no re-exec.
It must therefore run before the first `import mlx.core`; `mlx_tts/__init__.py` calls it first thing.

Which library (`MLX_TTS_BLAS`):
- `auto` (default): OpenBLAS from the `scipy-openblas32` wheel (a requirement on Linux). Its symbols carry
  a `scipy_` prefix, so a small C shim (`ext/blas_shim.c`) exports the standard names over it; the shim is
  compiled once with the system C compiler and cached (see `mlx_tts.ext.build`). Without a
  compiler, a system OpenBLAS that exports the standard names (Debian: `libopenblas0-pthread`) is used.
- `off`: leave MLX's bundled reference BLAS alone.
- a path: load that library; it must export `cblas_sgemm`, `cblas_dgemm` and `cblas_cgemm`.

Nothing happens off Linux, when a CUDA build of MLX (`mlx-cuda-12` / `mlx-cuda-13`) is installed (its
default device is the GPU, whose kernels never call a CPU BLAS), or when `mlx.core` was imported first.

Threads: OpenBLAS splits a GEMM statically over its threads, so on a machine shared with other work
(2 cores, several busy processes) a 2-thread OpenBLAS made mid-sized GEMVs (1 x 1024 x 1024) 100x slower
(median), while on a quiet machine 2 threads are 2x faster for GEMMs and GEMVs alike. So OpenBLAS itself
runs single-threaded, and the shim cuts large sgemm calls into blocks that a small thread pool takes
one at a time (`ext/blas_shim.c`; `MLX_TTS_THREADS` threads, default: the CPUs this process may use): a
thread that gets no CPU time just takes fewer blocks. With `OPENBLAS_NUM_THREADS` set, OpenBLAS threads
as told instead. A system OpenBLAS (no shim) runs single-threaded unless that variable says otherwise.
On CPUs with AVX-512, `OPENBLAS_CORETYPE` defaults to `SkylakeX` (its AVX-512 kernels): OpenBLAS 0.3.34
does not recognize AMD Zen 5 and would run its AVX2 kernels at half the speed.
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


def active():
    """Path of the BLAS library that MLX's CPU GEMMs use, or None when it is MLX's bundled one."""
    return _active


def enable():
    """Load the BLAS chosen by `MLX_TTS_BLAS` into the global symbol scope (once); return its path or None."""
    global _active, _decided
    if _decided:
        return _active
    _decided = True
    choice = os.environ.get("MLX_TTS_BLAS", "auto").strip()
    if choice.lower() == "off" or not _applies():
        return None
    paths = [choice] if choice.lower() != "auto" else _candidates()
    if "OPENBLAS_CORETYPE" not in os.environ and _has_avx512():
        # OpenBLAS 0.3.34 does not recognize every AVX-512 CPU (AMD Zen 5 among them) and then runs its
        # AVX2 (Haswell) kernels: float32 GEMM measured 255 -> 480 GFLOP/s on 2 Zen 5 cores with this.
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    for path in paths:
        try:
            library = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
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
        logger.debug("MLX CPU BLAS: %s", _active)
        return _active
    logger.warning(
        "no optimized BLAS for MLX: its matmuls stay ~40x slower. Install a C compiler (for the "
        "scipy-openblas32 shim) or Debian's libopenblas0-pthread, or set MLX_TTS_BLAS=off to silence this"
    )
    return None


def _applies() -> bool:
    if sys.platform != "linux":
        return False
    if "mlx.core" in sys.modules:
        logger.warning(
            "mlx.core was imported before mlx_tts, so MLX keeps the slow reference BLAS of the mlx-cpu wheel: "
            "import mlx_tts first (or set MLX_TTS_BLAS=off to silence this)"
        )
        return False
    for name in _CUDA_BUILDS:
        try:
            importlib.metadata.version(name)
            return False
        except importlib.metadata.PackageNotFoundError:
            pass
    return True


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
