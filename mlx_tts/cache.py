"""Where the engine keeps what it makes once: converted models, the embedded model, compiled kernels.

No MLX import here: `mlx_tts.cpu_blas` needs the cache before `mlx.core` is loaded.
"""

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$MLX_TTS_CACHE`, or `~/.cache/mlx_tts` when it is unset or empty; created if missing."""
    path = Path(os.environ.get("MLX_TTS_CACHE") or Path.home() / ".cache" / "mlx_tts")
    path.mkdir(parents=True, exist_ok=True)
    return path
