"""MLX text-to-speech: Kokoro-82M and Sesame CSM-1B.

First thing, before anything imports `mlx.core`: on Linux's mlx-cpu build, point MLX's GEMMs at an optimized
BLAS (see `mlx_tts.cpu_blas`; `MLX_TTS_BLAS=off` disables it). And on glibc, keep freed activations from
staying resident (see `mlx_tts.malloc`).
"""

from . import cpu_blas, malloc

cpu_blas.enable()
malloc.fix_mmap_threshold()

from .quantize import quantize_model  # noqa: E402
from .utils import DEFAULT_MODEL, EMBEDDED_MODEL, load_model, save_model  # noqa: E402

__all__ = ["DEFAULT_MODEL", "EMBEDDED_MODEL", "load_model", "quantize_model", "save_model"]
