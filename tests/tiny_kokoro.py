"""A small random Kokoro checkpoint in hexgrad's torch layout, for loading, pipeline and quantization tests."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mlx_tts.models.kokoro.embedded import embedded_config
from mlx_tts.models.kokoro.onnx_import import parameter_shapes

STYLE_DIM = 128  # voices are [510, 1, 2 * style_dim] = 256 wide, as in every Kokoro checkpoint


def tiny_config() -> dict:
    config = embedded_config()
    # hexgrad's decoder hard-codes its 1024/512 channel widths, so hidden_dim and upsample_initial_channel
    # stay at 512; the ALBERT, the LSTM depth and the generator's resblocks shrink.
    config.update(style_dim=STYLE_DIM, n_layer=1)
    config["plbert"].update(hidden_size=64, num_attention_heads=2, intermediate_size=128, num_hidden_layers=2)
    config["istftnet"].update(resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
    return config


def tiny_torch_weights(config: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in parameter_shapes(config).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        weights[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    # Random weights overflow the decoder's exp(magnitude): keep conv_post small (as in the notes).
    weights["decoder.generator.conv_post.weight_g"] *= 0.01
    return weights


def write_tiny_checkpoint(folder, seed: int = 0, voices=("af_test", "am_test")) -> Path:
    """A folder shaped like prince-canuma/Kokoro-82M: config.json (no model_type), a flat torch-layout
    safetensors, voices/<name>.npy."""
    folder = Path(folder)
    (folder / "voices").mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False))
    save_file(tiny_torch_weights(config, seed), str(folder / "kokoro-v1_0.safetensors"))
    rng = np.random.default_rng(seed + 1)
    for name in voices:
        np.save(folder / "voices" / f"{name}.npy", rng.standard_normal((510, 1, 2 * STYLE_DIM)).astype(np.float32))
    return folder
