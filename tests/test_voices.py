import json
import pickle
import shutil
import subprocess
import sys
import zipfile

import mlx.core as mx
import numpy as np
import pytest

from mlx_tts.models.kokoro import voices as voices_module
from mlx_tts.models.kokoro.voices import (
    VOICE_CACHE,
    VOICE_CACHE_BYTES,
    PackCache,
    VoiceBank,
    VoiceError,
    read_voices,
    save_voice,
    style_for_length,
)

from voice_files import write_torch_style_pt


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
    with pytest.raises(VoiceError, match=r"short.npy.*\[510, 128\]"):
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


def test_packs_are_cached(model_dir, tmp_path, monkeypatch):
    folder = shutil.copytree(model_dir, tmp_path / "model")  # files no other test has read into the cache
    bank = VoiceBank(folder)
    calls = []
    real = voices_module.read_voice
    monkeypatch.setattr(voices_module, "read_voice", lambda path, name: calls.append(name) or real(path, name))
    bank.resolve("jf_alpha")
    bank.resolve("jm_kumo, jf_alpha")
    bank.resolve("af_bella(2)+jf_alpha(1)")
    assert calls == ["jf_alpha", "jm_kumo", "af_bella"]  # each voice read once, the .bin's voices one by one


def test_pack_cache_drops_the_least_recently_used(model_dir, packs):
    one = packs["af_bella"].nbytes
    cache = PackCache(max_bytes=2 * one)
    voices = model_dir / "voices"
    a = cache.get(voices / "af_bella.safetensors", "af_bella")
    cache.get(voices / "af_sky.safetensors", "af_sky")
    assert cache.get(voices / "af_bella.safetensors", "af_bella") is a  # a hit, and now the most recent
    cache.get(voices / "bm_lewis.npy", "bm_lewis")  # over budget: af_sky goes
    assert cache.nbytes == 2 * one
    assert cache.get(voices / "af_bella.safetensors", "af_bella") is a
    assert cache.get(voices / "af_sky.safetensors", "af_sky") is not None and cache.nbytes == 2 * one


def test_the_banks_share_one_bounded_cache(model_dir):
    before = VOICE_CACHE.nbytes
    VoiceBank(shutil.copytree(model_dir, model_dir.parent / "shared_copy")).resolve("bm_lewis")
    assert VOICE_CACHE.nbytes == before + 510 * 256 * 4 <= VOICE_CACHE_BYTES
    assert VOICE_CACHE.max_bytes == VOICE_CACHE_BYTES == 64 << 20


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


@pytest.fixture(scope="module")
def oversized_pt(tmp_path_factory):
    """The probe's upload: a 0.99 MB .pt declaring a zero voice of 1,000,000 x 1 x 256 (1 GB unpacked)."""
    return write_torch_style_pt(tmp_path_factory.mktemp("upload") / "huge.pt", 1_000_000)


@pytest.mark.reference
def test_the_fixture_builder_writes_what_torch_reads(tmp_path):
    import torch

    path = write_torch_style_pt(tmp_path / "zero.pt", 510, chunk_rows=100)
    assert torch.equal(torch.load(path, weights_only=True), torch.zeros(510, 1, 256))


@pytest.mark.reference
def test_oversized_compressed_voice_is_refused_by_its_header(oversized_pt):
    assert oversized_pt.stat().st_size < 1_100_000
    with pytest.raises(VoiceError, match=r"huge.pt.*1 to 510 rows, got \[1000000, 1, 256\]"):
        read_voices(oversized_pt)


_TEN_UPLOADS = """
import resource, sys
import mlx_tts
mlx_tts.accelerate()  # as the studio runs
from mlx_tts.models.kokoro.voices import VoiceBank, VoiceError

def rss_mb():  # current resident set, from /proc
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

bank = VoiceBank(sys.argv[1])
bank.resolve("af_bella")
before, peak_before = rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for _ in range(10):
    try:
        bank.resolve(sys.argv[2])
    except VoiceError:
        pass
    else:
        raise SystemExit("the oversized voice was accepted")
print(before, rss_mb(), peak_before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.reference
def test_ten_oversized_uploads_leave_memory_flat(model_dir, oversized_pt):
    """Each upload used to cost ~1 GB kept forever; now nothing is allocated (peak RSS included)."""
    run = subprocess.run(
        [sys.executable, "-c", _TEN_UPLOADS, str(model_dir), str(oversized_pt)],
        capture_output=True, text=True, check=True,
    )
    before, after, peak_before, peak_after = map(float, run.stdout.split())
    print(f"RSS {before:.0f} -> {after:.0f} MB, peak {peak_before:.0f} -> {peak_after:.0f} MB after ten uploads")
    assert after - before < 16 and peak_after - peak_before < 16


class _OpensAFile:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(bank, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_OpensAFile(marker), protocol=2))
        archive.writestr("archive/version", "3")
    with pytest.raises(VoiceError, match="evil.pt.*refusing to unpickle the global 'io.open'"):
        bank.resolve(str(evil))
    assert not marker.exists()


def test_headers_declaring_oversized_voices_are_refused_before_reading(tmp_path):
    """Each file declares a 1,000,000-row voice and holds none of its data: only the header can be read."""
    npy = tmp_path / "huge.npy"
    with open(npy, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 256)})
    header = json.dumps({"voice": {"dtype": "F32", "shape": [1_000_000, 1, 256], "data_offsets": [0, 1024000000]}})
    safetensors = tmp_path / "huge.safetensors"
    safetensors.write_bytes(len(header).to_bytes(8, "little") + header.encode())
    npz = tmp_path / "voices.npz"
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("big.npy", npy.read_bytes())
    for path in (npy, safetensors):
        with pytest.raises(VoiceError, match=rf"{path.name}.*1 to 510 rows, got \[1000000"):
            read_voices(path)
    with pytest.raises(VoiceError, match=r"voices.npz\[big\].*got \[1000000, 256\]"):
        read_voices(npz)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda v: v.__setitem__((7, 0, 3), np.nan), "NaN or infinite"),
        (lambda v: v.__setitem__((7, 0, 3), np.inf), "NaN or infinite"),
        (lambda v: v.__setitem__((7, 0, 3), 3e9), "values up to 3e.09"),
        (lambda v: v.__setitem__(slice(300, None), 0), "210 of the voice's 510 rows are all zero, from row 300"),
        (lambda v: v.__setitem__(slice(None), 0), "510 of the voice's 510 rows are all zero"),
    ],
    ids=["nan", "inf", "huge", "zero-tail", "all-zero"],
)
def test_damaged_voices_are_refused(packs, tmp_path, damage, problem):
    voice = packs["af_sky"].copy()
    damage(voice)
    np.save(tmp_path / "damaged.npy", voice)
    with pytest.raises(VoiceError, match=f"damaged.npy: .*{problem}"):
        VoiceBank(tmp_path).resolve(str(tmp_path / "damaged.npy"))


def test_accepted_shapes_and_row_counts(tmp_path):
    rng = np.random.default_rng(3)
    for rows in (1, 510):
        for shape in ((rows, 256), (rows, 1, 256)):
            np.save(tmp_path / "v.npy", rng.standard_normal(shape).astype(np.float16))
            assert read_voices(tmp_path / "v.npy")["v"].shape == (rows, 1, 256)
    np.save(tmp_path / "v.npy", rng.standard_normal((511, 256)).astype(np.float32))
    with pytest.raises(VoiceError, match=r"got \[511, 256\]"):
        read_voices(tmp_path / "v.npy")


def test_a_safetensors_header_with_a_nonsense_shape_is_named(tmp_path):
    header = json.dumps({"voice": {"dtype": "F32", "shape": "510x256", "data_offsets": [0, 8]}})
    path = tmp_path / "odd.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + bytes(8))
    with pytest.raises(VoiceError, match="odd.safetensors: the file declares a shape that is not a list of sizes"):
        read_voices(path)
