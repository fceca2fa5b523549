"""Manifests of the folders the engine writes: written complete, checked on load; a damaged cache folder is
rebuilt from its source, a damaged folder of the user's is refused naming the file and what to delete."""

import hashlib
import json
import logging
import shutil

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_tts import manifest
from mlx_tts.manifest import MANIFEST, DamagedFolderError, verify_manifest
from mlx_tts.models.kokoro import KokoroPipeline
from mlx_tts.utils import ModelLoadError, cache_dir, load_model, save_model


def _tensor_bytes(path, key):
    """(offset, length) in the file of the safetensors tensor `key`."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        begin, end = json.loads(f.read(size))[key]["data_offsets"]
    return 8 + size + begin, end - begin


def overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def nan_out_conv_post(folder):
    """What the probe did to cached weights: bytes overwritten in place (0xFF: NaN floats), same file size."""
    path = folder / "model.safetensors"
    offset, length = _tensor_bytes(path, "decoder.generator.conv_post.weight")
    overwrite(path, offset, b"\xff" * length)


def truncate(folder, name="model.safetensors"):
    path = folder / name
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint (it gets its own converted folder in the cache) and its model."""
    source = shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("copy") / "source")
    return source, load_model(source)


@pytest.fixture
def saved(tiny_model, tmp_path):
    """A folder of the user's, written by save_model."""
    return save_model(tmp_path / "mine", dict(tree_flatten(tiny_model.parameters())), tiny_model.config, tiny_model)


def _same_weights(a, b):
    pairs = zip(tree_flatten(a.parameters()), tree_flatten(b.parameters()))
    return all(mx.array_equal(x, y) for (_, x), (_, y) in pairs)


def test_engine_folders_record_every_file(tiny_model, saved):
    for folder in (tiny_model.path, saved):
        files = json.loads((folder / MANIFEST).read_text())["files"]
        assert sorted(files) == ["config.json", "model.safetensors", "voices/af_test.safetensors",
                                 "voices/am_test.safetensors"]
        for name, entry in files.items():
            data = (folder / name).read_bytes()
            assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
        assert verify_manifest(folder)


def test_hashes_are_checked_once_per_file_state(saved, monkeypatch):
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    verify_manifest(saved)
    hashed.clear()
    assert verify_manifest(saved) and hashed == []  # nothing changed: stats only
    voice = saved / "voices" / "am_test.safetensors"
    overwrite(voice, voice.stat().st_size - 4, voice.read_bytes()[-4:])  # rewritten, same bytes
    assert verify_manifest(saved) and hashed == ["am_test.safetensors"]


@pytest.mark.parametrize("damage, problem", [
    (truncate, r"model.safetensors: the file has \d+ bytes where the manifest records \d+"),
    (nan_out_conv_post, r"model.safetensors: its bytes differ from the manifest's"),
    (lambda f: (f / "voices" / "af_test.safetensors").unlink(), r"af_test.safetensors: the file is missing"),
], ids=["truncated", "overwritten", "missing"])
def test_a_damaged_folder_of_the_users_is_refused_saying_what_to_delete(saved, damage, problem):
    verify_manifest(saved)  # verified once: the stamps must not hide what comes next
    damage(saved)
    with pytest.raises(ModelLoadError, match=problem) as error:
        load_model(saved)
    assert isinstance(error.value, DamagedFolderError)
    assert f"Delete the folder {saved} and write it again" in str(error.value)
    assert f"delete {saved / MANIFEST} instead" in str(error.value)


def test_an_unreadable_manifest_is_named(saved):
    (saved / MANIFEST).write_text("{")
    with pytest.raises(DamagedFolderError, match=f"{MANIFEST}: the manifest can't be read"):
        load_model(saved)


@pytest.mark.parametrize("damage", [truncate, nan_out_conv_post, lambda f: (f / MANIFEST).unlink()],
                         ids=["truncated", "overwritten", "no-manifest"])
def test_a_damaged_cache_folder_is_rebuilt_from_its_source(converted, damage, caplog):
    source, first = converted
    folder = first.path
    assert folder.parent == cache_dir() / "converted"
    damage(folder)
    with caplog.at_level(logging.WARNING, logger="mlx_tts"):
        again = load_model(source)
    assert f"Rebuilding the cached model {folder} from its source: " in caplog.text
    assert again.path == folder and verify_manifest(folder) and _same_weights(first, again)
    assert not list(folder.parent.glob(f"{folder.name}.*"))  # no temporary or stale folder left beside it
    if damage is nan_out_conv_post:  # the probe's case: it used to load, then every take failed
        (result,) = KokoroPipeline("a", model=again)("Hello.", voice="af_test", speed=4)
        assert np.isfinite(np.asarray(result.audio)).all()


def test_a_healthy_cache_folder_is_not_rebuilt(converted, caplog):
    source, first = converted
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mlx_tts"):
        load_model(source)
    assert "Converting" not in caplog.text and "Rebuilding" not in caplog.text
    assert (first.path / "model.safetensors").stat().st_mtime_ns == stamp
