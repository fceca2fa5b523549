import sys
from pathlib import Path

import mlx_tts

mlx_tts.accelerate()  # as the applications do: before any test module imports mlx.core

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests' helper modules (tiny_kokoro, kokoro_reference)

from tiny_kokoro import write_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Converted models go to a fresh cache, except what is slow to make and never changes for the same
    inputs: the embedded model (assembled from installed packages) and the native kernels (compiled)."""
    import os

    from mlx_tts.utils import cache_dir

    shared = cache_dir()
    os.environ["MLX_TTS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    for name in ("embedded", "ext"):
        (shared / name).mkdir(exist_ok=True)
        (cache_dir() / name).symlink_to(shared / name)
    yield


@pytest.fixture(scope="session")
def kernel():
    """The native CPU kernels (mlx_tts/ext). Without a C++ compiler the tests that take them skip with the
    build's error; with one, the kernels must build and load."""
    from mlx_tts import ext
    from mlx_tts.ext.build import BuildError, find_compiler

    try:
        find_compiler("c++")
    except BuildError as e:
        pytest.skip(f"native CPU kernels not built: {e}")
    module = ext.cpu_kernels()
    assert module is not None, "the native CPU kernels did not build or load (see the log above)"
    return module


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random Kokoro in hexgrad's layout (like prince-canuma/Kokoro-82M), with voices af_test, am_test."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_kokoro"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from mlx_tts.utils import load_model

    return load_model(tiny_checkpoint)
