"""MLX text-to-speech: Kokoro-82M and Sesame CSM-1B.

Importing the package changes nothing process-wide and loads no MLX. Applications call `mlx_tts.accelerate()`
first thing, before anything imports `mlx.core`: on Linux's mlx-cpu build it points MLX's GEMMs at an
optimized BLAS, and on glibc it keeps freed activations from staying resident (`mlx_tts.acceleration`).
"""

from .acceleration import Acceleration, accelerate

DEFAULT_MODEL = "prince-canuma/Kokoro-82M"  # what load_model() loads when given nothing
EMBEDDED_MODEL = "embedded:kokoro-82m"  # the Kokoro-82M assembled offline from PyPI packages

_LAZY = {  # name -> module: loaded on first use, so that `import mlx_tts` does not import mlx.core
    "load_model": "utils",
    "save_model": "utils",
    "quantize_model": "quantize",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Acceleration", "DEFAULT_MODEL", "EMBEDDED_MODEL", "accelerate", "load_model", "quantize_model", "save_model"
]
