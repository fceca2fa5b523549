import mlx.core as mx
import numpy as np
import pytest

from mlx_tts.models.kokoro import voices as voices_module
from mlx_tts.models.kokoro.voices import VoiceBank, VoiceError, read_voices, save_voice, style_for_length


def _pack(seed):
    return np.random.default_rng(seed).standard_normal((510, 1, 256)).astype(np.float32)


@pytest.fixture(scope="module")
def packs():
    names = ["af_bella", "af_sky", "bm_lewis", "jf_alpha", "jm_kumo"]
    return {name: _pack(seed) for seed, name in enumerate(names)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, packs):
    """A converted-style folder: safetensors voices, plus an .npy and a kokoro-onnx style .bin."""
    root = tmp_path_factory.mktemp("model")
    (root / "voices").mkdir()
    save_voice(root / "voices" / "af_bella.safetensors", packs["af_bella"])
    save_voice(root / "voices" / "af_sky.safetensors", mx.array(packs["af_sky"]))
    np.save(root / "voices" / "bm_lewis.npy", packs["bm_lewis"])
    with open(root / "voices" / "voices-v1.0.bin", "wb") as f:
        np.savez(f, jf_alpha=packs["jf_alpha"], jm_kumo=packs["jm_kumo"][:, 0, :])  # [510, 256] is accepted
    (root / "voices" / "README.md").write_text("not a voice")
    return root


@pytest.fixture
def bank(model_dir):
    return VoiceBank(model_dir)


def test_names_cover_every_format(bank):
    assert bank.names() == ["af_bella", "af_sky", "bm_lewis", "jf_alpha", "jm_kumo"]


def test_resolve_each_name_exactly(bank, packs):
    for name, pack in packs.items():
        voice = bank.resolve(name)
        assert isinstance(voice, mx.array) and voice.dtype == mx.float32 and voice.shape == (510, 1, 256)
        np.testing.assert_array_equal(np.array(voice), pack, err_msg=name)


def test_weighted_blend_is_normalised(bank, packs):
    expected = (2 * packs["af_bella"] + packs["af_sky"]) / 3
    for spec in ["af_bella(2)+af_sky(1)", "  af_bella ( 2 ) +  af_sky(1) ", "af_bella(1)+af_sky(0.5)"]:
        np.testing.assert_allclose(np.array(bank.resolve(spec)), expected, rtol=1e-5, atol=1e-6, err_msg=spec)


def test_comma_list_is_an_equal_average(bank, packs):
    expected = (packs["af_bella"] + packs["bm_lewis"] + packs["jm_kumo"]) / 3
    blend = bank.resolve("af_bella, bm_lewis,jm_kumo")
    np.testing.assert_allclose(np.array(blend), expected, rtol=1e-5, atol=1e-6)


def test_path_and_blend_with_path(bank, packs, tmp_path):
    path = tmp_path / "mine.npy"
    np.save(path, packs["af_sky"])
    np.testing.assert_array_equal(np.array(bank.resolve(str(path))), packs["af_sky"])
    blend = bank.resolve(f"{path}(3)+af_bella(1)")
    np.testing.assert_allclose(np.array(blend), 0.75 * packs["af_sky"] + 0.25 * packs["af_bella"], atol=1e-6)


def test_unknown_voice_lists_available(bank):
    available = "af_bella, af_sky, bm_lewis, jf_alpha, jm_kumo"
    with pytest.raises(VoiceError, match=f"unknown voice 'af_nobody'.*{available}"):
        bank.resolve("af_nobody")
    with pytest.raises(VoiceError, match="'zz'"):
        bank.resolve("af_bella+zz")


def test_empty_folder_says_so(tmp_path):
    with pytest.raises(VoiceError, match="has no voice files"):
        VoiceBank(tmp_path).resolve("af_bella")


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("af_bella(x)+af_sky", "'x'.*not a number"),
        ("af_bella(-1)+af_sky", "positive"),
        ("af_bella(0)", "positive"),
        ("af_bella(nan)+af_sky", "positive"),
        ("af_bella((2))", "can't read"),
        ("", "empty"),
    ],
)
def test_bad_weights(bank, spec, problem):
    with pytest.raises(VoiceError, match=problem):
        bank.resolve(spec)


def test_bad_files_are_named(tmp_path):
    text = tmp_path / "voice.txt"
    text.write_text("hello")
    with pytest.raises(VoiceError, match="voice.txt.*unsupported voice format"):
        read_voices(text)
    wrong_key = tmp_path / "wrong.safetensors"
    mx.save_safetensors(str(wrong_key), {"style": mx.zeros((510, 1, 256))})
    with pytest.raises(VoiceError, match="wrong.safetensors.*'voice'.*style"):
        read_voices(wrong_key)
    wrong_shape = tmp_path / "short.npy"
    np.save(wrong_shape, np.zeros((510, 128), np.float32))
    with pytest.raises(VoiceError, match=r"short.npy.*\[510, 1, 128\]"):
        read_voices(wrong_shape)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(VoiceError, match="garbage.bin"):
        read_voices(garbage)
    with pytest.raises(VoiceError, match="no such voice file"):
        read_voices(tmp_path / "absent.pt")


def test_multi_voice_file_by_path_is_refused(bank, model_dir):
    with pytest.raises(VoiceError, match="holds 2 voices"):
        bank.resolve(str(model_dir / "voices" / "voices-v1.0.bin"))


def test_packs_are_cached(model_dir, monkeypatch):
    bank = VoiceBank(model_dir)
    calls = []
    real = voices_module.read_voices
    monkeypatch.setattr(voices_module, "read_voices", lambda path: calls.append(path) or real(path))
    bank.resolve("jf_alpha")
    bank.resolve("jm_kumo, jf_alpha")
    bank.resolve("af_bella(2)+jf_alpha(1)")
    assert len(calls) == 2  # the .bin once, af_bella once


def test_style_for_length_picks_row_and_clamps(bank, packs):
    pack = bank.resolve("af_bella")
    for n, row in [(1, 0), (42, 41), (510, 509), (0, 0), (2000, 509)]:
        style = style_for_length(pack, n)
        assert style.shape == (1, 256)
        np.testing.assert_array_equal(np.array(style), packs["af_bella"][row], err_msg=str(n))


@pytest.mark.reference
def test_pt_voice_via_torch_io(tmp_path):
    import torch

    pack = torch.randn(510, 1, 256)
    torch.save(pack, tmp_path / "af_heart.pt")
    (tmp_path / "voices").mkdir()
    torch.save(pack.to(torch.bfloat16), tmp_path / "voices" / "af_bf16.pt")
    np.testing.assert_array_equal(read_voices(tmp_path / "af_heart.pt")["af_heart"], pack.numpy())
    bank = VoiceBank(tmp_path)
    assert bank.names() == ["af_bf16"]
    np.testing.assert_array_equal(np.array(bank.resolve("af_bf16")), pack.to(torch.bfloat16).float().numpy())
