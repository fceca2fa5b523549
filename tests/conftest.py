import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests' helper modules (tiny_kokoro, kokoro_reference)

from tiny_kokoro import write_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Converted models go to a fresh cache, except the embedded model, which is reused across runs (it is
    assembled from installed packages and takes a while)."""
    import os

    from mlx_tts.utils import cache_dir

    embedded = cache_dir() / "embedded"
    os.environ["MLX_TTS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    if embedded.is_dir():
        (cache_dir() / "embedded").symlink_to(embedded)
    yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random Kokoro in hexgrad's layout (like prince-canuma/Kokoro-82M), with voices af_test, am_test."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_kokoro"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from mlx_tts.utils import load_model

    return load_model(tiny_checkpoint)
