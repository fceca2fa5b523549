"""Native CPU kernels for MLX, shipped as source and compiled on first use (see `build.py`).

`cpu_kernels()` returns the `_cpu_kernels` module (MLX primitives with their own multithreaded CPU code:
`conv1d` and `conv_transpose1d` in `conv.cpp` and `direct_conv.cpp`, `snake` and `adain_snake` in
`norm_snake.cpp`, `softmax` and `gelu_tanh` in `pointwise.cpp`, `lstm_recurrence` in `lstm.cpp`,
`quantized_matvec`, `bfloat16_matvec` and `dequantize` in `quantized.cpp`; see `kernels.h`), or None when it
can't be built; callers then use MLX ops. Set `MLX_TTS_EXT=off` to never build or load it, `MLX_TTS_EXT=portable`
to build it without its x86 code paths (as on other CPUs: how they are tested on x86; cached apart from the
default), `MLX_TTS_EXT=avx2` to keep an AVX-512 CPU on the AVX2 paths (how those are tested there), and
`MLX_TTS_THREADS` to change its thread count (default: the CPUs this process may use). The module links to the
installed libmlx and shares nanobind type information with `mlx.core`, so it is built against the nanobind
version MLX itself was built with (a requirement on Linux) and in MLX's nanobind domain.
"""

import importlib.metadata
import importlib.util
import logging
import os
import sys
import sysconfig
import threading
from pathlib import Path

from .build import BuildError, build_library, cache_folder

logger = logging.getLogger("mlx_tts")

_HERE = Path(__file__).resolve().parent
_SOURCES = (
    "conv.cpp",
    "direct_conv.cpp",
    "fft_conv.cpp",
    "norm_snake.cpp",
    "pointwise.cpp",
    "lstm.cpp",
    "quantized.cpp",
    "parallel.cpp",
    "bindings.cpp",
)
_HEADERS = ("kernels.h", "parallel.h", "direct_conv.h", "fft_conv.h", "fast_math.h", "norm_snake.h", "cpu_primitive.h",
            "simd.h")
_cpu_kernels = None
_tried = False  # set once the one build (or cache lookup) has finished, under _build_lock
_build_lock = threading.Lock()


def cpu_kernels():
    """The compiled kernel module, built once per machine; None if disabled or unbuildable.

    A caller that arrives while another thread builds waits for that build rather than starting its own."""
    global _cpu_kernels, _tried
    if _tried:
        return _cpu_kernels
    with _build_lock:
        if not _tried:
            if enabled():
                try:
                    path = _build_cpu_kernels()
                    _cpu_kernels = _checked(_load("_cpu_kernels", path))
                    logger.info("native CPU kernels ready: %s", path)
                except (BuildError, ImportError, OSError, TypeError) as e:
                    logger.warning("native CPU kernels unavailable, using MLX ops instead: %s", e)
            _tried = True
    return _cpu_kernels


def enabled() -> bool:
    """False when `MLX_TTS_EXT=off`."""
    return os.environ.get("MLX_TTS_EXT", "on").strip().lower() != "off"


def ready() -> bool:
    """True once `cpu_kernels()` has its answer (the module, or None), so a call no longer waits for a build."""
    return _tried


def used() -> bool:
    """Whether this process would run the kernels: they are enabled and MLX's default device is the CPU
    (GPU devices keep MLX's own kernels, so building them there would only cost time)."""
    import mlx.core as mx

    return enabled() and mx.default_device() == mx.cpu


def prepare_in_background():
    """Start the one-time build in a daemon thread when this process would use the kernels, so that the
    first request finds them ready (or waits for the build already under way). Returns the thread, or None."""
    if _tried or not used():
        return None
    logger.info("preparing the native CPU kernels in the background (compiled once per machine, cached in %s)",
                cache_folder())
    thread = threading.Thread(target=cpu_kernels, name="mlx_tts-ext-build", daemon=True)
    thread.start()
    return thread


def kernels_for(*arrays):
    """`cpu_kernels()` when the default device is the CPU and every array is float32, else None."""
    import mlx.core as mx  # not at the top: mlx_tts.cpu_blas imports this package before MLX is loaded

    if mx.default_device() != mx.cpu or any(a.dtype != mx.float32 for a in arrays):
        return None
    return cpu_kernels()


def _build_cpu_kernels() -> Path:
    try:
        import nanobind
    except ImportError as e:
        raise BuildError("nanobind is not installed") from e
    mlx_dir = Path(importlib.util.find_spec("mlx").submodule_search_locations[0])
    portable = os.environ.get("MLX_TTS_EXT", "on").strip().lower() == "portable"
    args = [
        "-std=c++20",
        "-O3",
        "-fvisibility=hidden",
        "-DNDEBUG",
        "-DNB_COMPACT_ASSERTIONS",
        "-DNB_DOMAIN=mlx",
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{nanobind.include_dir()}",
        f"-I{Path(nanobind.source_dir()).parent / 'ext' / 'robin_map' / 'include'}",
        f"-I{mlx_dir / 'include'}",
        f"-L{mlx_dir / 'lib'}",
        "-lmlx",
        "-pthread",
        "-ldl",
        f"-Wl,-rpath,{mlx_dir / 'lib'}",
        *(["-DMLX_TTS_PORTABLE"] if portable else []),
        # macOS links an extension without libpython: its symbols resolve when the interpreter loads it.
        *(["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else []),
    ]
    sources = [_HERE / name for name in _SOURCES] + [Path(nanobind.source_dir()) / "nb_combined.cpp"]
    headers = tuple((_HERE / name).read_text() for name in _HEADERS)
    return build_library(
        "cpu_kernels_portable" if portable else "cpu_kernels",
        sources,
        args,
        language="c++",
        suffix=sysconfig.get_config_var("EXT_SUFFIX"),
        depends_on=(importlib.metadata.version("mlx"), nanobind.__version__, *headers),
    )


def _checked(module):
    """The module, once an array has gone through it: a nanobind whose type registry differs from
    mlx.core's would only show as a TypeError at the first call."""
    import mlx.core as mx

    mx.eval(module.snake(mx.zeros((1, 1)), mx.ones((1,))))
    return module


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
