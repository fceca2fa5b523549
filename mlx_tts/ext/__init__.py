"""Native CPU kernels for MLX, shipped as source and compiled on first use (see `build.py`).

`conv_cpu()` returns the `_conv_cpu` module (`conv_cpu.cpp`: MLX primitives for conv1d and
conv_transpose1d), or None when it can't be built; callers then use MLX-op implementations. Set
`MLX_TTS_EXT=off` to never build or load it. The module links to the installed libmlx and shares nanobind
type information with `mlx.core`, so it is built against the nanobind version MLX itself was built with
(a requirement on Linux) and in MLX's nanobind domain.
"""

import importlib.metadata
import importlib.util
import logging
import os
import sysconfig
from pathlib import Path

from .build import BuildError, build_library

logger = logging.getLogger("mlx_tts")

_HERE = Path(__file__).resolve().parent
_conv_cpu = None
_tried = False


def conv_cpu():
    """The compiled convolution module, built once per machine; None if disabled or unbuildable."""
    global _conv_cpu, _tried
    if not _tried:
        _tried = True
        if os.environ.get("MLX_TTS_EXT", "on").strip().lower() != "off":
            try:
                _conv_cpu = _load("_conv_cpu", _build_conv_cpu())
            except (BuildError, ImportError, OSError) as e:
                logger.warning("native CPU convolutions unavailable, using MLX ops instead: %s", e)
    return _conv_cpu


def _build_conv_cpu() -> Path:
    try:
        import nanobind
    except ImportError as e:
        raise BuildError("nanobind is not installed") from e
    mlx_dir = Path(importlib.util.find_spec("mlx").submodule_search_locations[0])
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
    ]
    sources = [_HERE / "conv_cpu.cpp", Path(nanobind.source_dir()) / "nb_combined.cpp"]
    return build_library(
        "conv_cpu",
        sources,
        args,
        language="c++",
        suffix=sysconfig.get_config_var("EXT_SUFFIX"),
        depends_on=(importlib.metadata.version("mlx"), nanobind.__version__),
    )


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
