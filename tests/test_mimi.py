"""Mimi codec: shapes, streaming, converters, and parity with transformers' `MimiModel` (tiny config)."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_tts.models import mimi
from mlx_tts.utils import load_model

from tiny_csm import MIMI_CONFIG, kyutai_state_dict, randomize, speech_like


@pytest.fixture(scope="module")
def random_model():
    return randomize(mimi.Model(mimi.ModelArgs.from_dict(MIMI_CONFIG)), seed=1)


@pytest.fixture(scope="module")
def reference():
    """A tiny transformers MimiModel with random weights (codebooks and layer scales too) and ours, converted."""
    import torch
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny ops: threads only contend on the shared cores
    config = MimiConfig(**MIMI_CONFIG)
    torch_model = MimiModel(config).eval()
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if name.endswith("scale"):
                p.copy_(torch.rand_like(p) * 0.5 + 0.25)
        for name, b in torch_model.named_buffers():
            if name.endswith("embed_sum"):
                b.copy_(torch.randn_like(b))
            elif name.endswith("cluster_usage"):
                b.copy_(torch.rand_like(b) + 0.5)
    state = {k: mx.array(v.numpy()) for k, v in torch_model.state_dict().items()}
    args = mimi.ModelArgs.from_dict(config.to_dict())
    model = mimi.Model(args)
    model.load_weights(list(model.sanitize(state).items()), strict=True)
    return torch_model, model, state, args


def test_frame_geometry(random_model):
    # kyutai's figures: 120000 samples -> 63 frames -> 120960 samples
    codes = random_model.encode(np.zeros(120000, np.float32) + 0.01)
    assert codes.shape == (1, 32, 63)
    assert codes.dtype in (mx.uint32, mx.int32, mx.int64, mx.uint64)
    assert int(codes.max()) < MIMI_CONFIG["codebook_size"]
    assert random_model.decode(codes).shape == (1, 1, 120960)
    assert random_model.args.frame_size == 1920


def test_streaming_decode_equals_full_decode(random_model):
    codes = random_model.encode(speech_like(1.5))
    full = np.array(random_model.decode(codes))
    stream = mimi.StreamingDecoder(random_model)
    chunks, start = [], 0
    for size in (1, 2, 5, 1, 3, 100):  # ragged chunks, longer than the 10-step attention window in total
        chunks.append(np.array(stream.decode(codes[:, :, start : start + size])))
        start += size
    streamed = np.concatenate(chunks, axis=-1)
    assert streamed.shape == full.shape
    np.testing.assert_allclose(streamed, full, atol=1e-5 * np.abs(full).max())
    stream.reset()
    np.testing.assert_allclose(np.array(stream.decode(codes)), full, atol=1e-5 * np.abs(full).max())


def test_bad_inputs_are_named(random_model):
    with pytest.raises(ValueError, match="shape"):
        random_model.encode(np.zeros((2, 3, 100), np.float32))
    with pytest.raises(ValueError, match="empty"):
        random_model.encode(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="codes of shape"):
        random_model.decode(np.zeros((1, 33, 4), np.int32))
    with pytest.raises(ValueError, match="use_conv_shortcut"):
        mimi.ModelArgs.from_dict({**MIMI_CONFIG, "use_conv_shortcut": True})


@pytest.mark.reference
def test_encode_gives_identical_codes(reference):
    import torch

    torch_model, model, _, _ = reference
    for seconds in (1.3, 2.0):  # 1.3 s is not a whole number of frames
        audio = speech_like(seconds, seed=int(seconds * 10))
        with torch.no_grad():
            expected = torch_model.encode(torch.from_numpy(audio)[None, None]).audio_codes.numpy()
        np.testing.assert_array_equal(np.array(model.encode(audio)), expected)


@pytest.mark.reference
def test_decode_matches(reference):
    import torch

    torch_model, model, _, _ = reference
    codes = np.random.default_rng(0).integers(0, MIMI_CONFIG["codebook_size"], (1, 32, 17))
    with torch.no_grad():
        expected = torch_model.decode(torch.from_numpy(codes)).audio_values.numpy()
    got = np.array(model.decode(codes))
    assert got.shape == expected.shape == (1, 1, 17 * 1920)
    np.testing.assert_allclose(got, expected, atol=2e-6 * np.abs(expected).max())


@pytest.mark.reference
def test_kyutai_and_flat_layouts_convert_to_the_same_weights(reference):
    torch_model, model, state, _ = reference
    from_state_dict = model.sanitize(state)
    from_kyutai = model.sanitize(kyutai_state_dict(torch_model))
    flat = {  # transformers' checkpoint names (what save_pretrained writes)
        k.replace("encoder.encoder_seanet.", "encoder.").replace("decoder.decoder_seanet.", "decoder.")
        .replace("encoder.encoder_transformer.", "encoder_transformer.")
        .replace("decoder.decoder_transformer.", "decoder_transformer.")
        .replace("encoder.downsample.", "downsample.").replace("decoder.upsample.", "upsample."): v
        for k, v in state.items()
    }
    from_flat = model.sanitize(flat)
    assert any(k.startswith("encoder.model.") for k in kyutai_state_dict(torch_model))
    for other in (from_kyutai, from_flat):
        assert set(other) == set(from_state_dict)
        for key, value in from_state_dict.items():
            np.testing.assert_array_equal(np.array(other[key]), np.array(value), err_msg=key)


@pytest.mark.reference
def test_convert_folder_loads_strictly(reference, tmp_path):
    torch_model, model, _, _ = reference
    torch_model.save_pretrained(tmp_path / "src")
    mimi.convert(tmp_path / "src", tmp_path / "dst")
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["layout"] == "mlx" and config["model_type"] == "mimi" and mimi.is_config(config)
    loaded = mimi.Model(mimi.ModelArgs.from_dict(config))
    loaded.load_weights(str(tmp_path / "dst" / "model.safetensors"), strict=True)
    ours = dict(tree_flatten(model.parameters()))
    for key, value in tree_flatten(loaded.parameters()):
        np.testing.assert_array_equal(np.array(value), np.array(ours[key]), err_msg=key)
    # load_model converts the same source folder into the cache, as it does Kokoro's and CSM's
    through_load_model = load_model(tmp_path / "src")
    assert isinstance(through_load_model, mimi.Model) and through_load_model.model_type == "mimi"
    for key, value in tree_flatten(through_load_model.parameters()):
        np.testing.assert_array_equal(np.array(value), np.array(ours[key]), err_msg=key)


@pytest.mark.parametrize("kind", ["4bit", "bfloat16"])
def test_linear_expands_low_precision_weights_for_many_positions(kind):
    from mlx_tts.layers import EXPAND_MIN_POSITIONS, linear

    layer = nn.Linear(64, 96)
    if kind == "4bit":
        layer = layer.to_quantized(group_size=32, bits=4)
    else:
        layer.set_dtype(mx.bfloat16)
    for positions in (1, EXPAND_MIN_POSITIONS, 40):
        x = mx.random.normal((2, positions, 64), key=mx.random.key(positions)).astype(layer.bias.dtype)
        got, expected = linear(layer, x), layer(x)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(expected.astype(mx.float32)),
                                   atol=3e-2 if kind == "bfloat16" else 1e-4)


def test_unknown_weights_are_refused(random_model):
    weights = {"encoder.layers.0.conv.weight": mx.zeros((4, 1, 7)), "encoder.layers.0.extra.weight": mx.zeros(3)}
    with pytest.raises(ValueError, match="does not use: encoder.layers.0.extra.weight"):
        random_model.sanitize(weights)
    with pytest.raises(ValueError, match="not a Mimi checkpoint"):
        random_model.sanitize({"foo.bar": mx.zeros(1)})
