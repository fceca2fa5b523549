import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from mlx_tts import torch_io
from mlx_tts.torch_io import CheckpointError


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("touch /tmp/torch_io_pwned",))


def _zip_with_pickle(path, payload, root="archive"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/data.pkl", payload)
        archive.writestr(f"{root}/version", "3\n")
    return path


def test_malicious_pickle_is_refused_before_import(tmp_path):
    path = _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps({"w": _RunsShell()}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        torch_io.load_torch_file(path)
    message = str(info.value)
    assert "evil.pt" in message and "system" in message
    assert not os.path.exists("/tmp/torch_io_pwned")


def test_plain_python_objects_without_globals_load(tmp_path):
    path = _zip_with_pickle(tmp_path / "meta.pt", pickle.dumps({"epoch": 3, "names": ["a", "b"]}, protocol=2))
    assert torch_io.load_torch_file(path) == {"epoch": 3, "names": ["a", "b"]}


def test_non_zip_and_missing_pickle_are_named(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="legacy.pt.*not a PyTorch zip"):
        torch_io.load_torch_file(legacy)
    empty = tmp_path / "empty.pt"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("archive/version", "3")
    with pytest.raises(CheckpointError, match="empty.pt.*data.pkl"):
        torch_io.load_torch_file(empty)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    base = torch.randn(6, 8)
    linear = torch.nn.Linear(4, 3)
    obj = {
        "model": {"encoder": linear.state_dict(), "step": 7},
        "tensors": {
            "plain": base,
            "parameter": torch.nn.Parameter(torch.randn(3, 2)),
            "offset_view": base[2:5, 3:],  # shares base's storage with an offset
            "transposed": base.t(),  # non-contiguous
            "strided": base[::2, 1::3],
            "expanded": torch.randn(1, 4).expand(3, 4),  # stride 0
            "half": torch.randn(5, 2).half(),
            "bf16": torch.randn(4, 3).to(torch.bfloat16),
            "long": torch.arange(-5, 5),
            "int": torch.arange(6, dtype=torch.int32).reshape(2, 3),
            "bool": torch.tensor([True, False, True]),
            "scalar": torch.tensor(2.5),
            "empty": torch.empty(0, 3),
        },
        "list": [torch.ones(2), (torch.zeros(1), "tag")],
    }
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save(obj, path)
    return obj, path


def _to_numpy(tensor):
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy().astype(ml_dtypes.bfloat16)
    return tensor.detach().numpy()


@pytest.mark.reference
def test_tensors_read_back_identical(saved):
    obj, path = saved
    loaded = torch_io.load_torch_file(path)
    for name, tensor in obj["tensors"].items():
        array = loaded["tensors"][name]
        expected = _to_numpy(tensor)
        assert array.dtype == expected.dtype, name
        assert array.shape == expected.shape, name
        np.testing.assert_array_equal(array, expected, err_msg=name)


@pytest.mark.reference
def test_nested_state_dicts_become_plain_dicts(saved):
    obj, path = saved
    loaded = torch_io.load_torch_file(path)
    encoder = loaded["model"]["encoder"]
    assert type(encoder) is dict and sorted(encoder) == ["bias", "weight"]
    np.testing.assert_array_equal(encoder["weight"], obj["model"]["encoder"]["weight"].numpy())
    assert loaded["model"]["step"] == 7
    first, (second, tag) = loaded["list"]
    np.testing.assert_array_equal(first, np.ones(2, np.float32))
    assert second.shape == (1,) and tag == "tag"


@pytest.mark.reference
def test_single_tensor_file_like_a_voice_pack(tmp_path):
    import torch

    pack = torch.randn(510, 1, 256)
    torch.save(pack, tmp_path / "af_test.pt")
    np.testing.assert_array_equal(torch_io.load_torch_file(tmp_path / "af_test.pt"), pack.numpy())


@pytest.mark.reference
def test_unknown_torch_global_is_refused(tmp_path):
    import torch

    torch.save({"size": torch.Size([2, 3])}, tmp_path / "size.pt")
    with pytest.raises(CheckpointError, match="size.pt.*torch.Size"):
        torch_io.load_torch_file(tmp_path / "size.pt")


@pytest.mark.reference
def test_big_endian_checkpoint(tmp_path):
    import torch

    values = torch.randn(4, 5)
    torch.save({"w": values}, tmp_path / "little.pt")
    # Rewrite the file as a big-endian machine would have saved it: byteorder "big", swapped storages.
    with zipfile.ZipFile(tmp_path / "little.pt") as src, zipfile.ZipFile(tmp_path / "big.pt", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, np.float32).byteswap().tobytes()
            dst.writestr(name, data)
    np.testing.assert_array_equal(torch_io.load_torch_file(tmp_path / "big.pt")["w"], values.numpy())


@pytest.mark.reference
def test_check_tensor_sees_every_header_before_any_data_is_read(saved, monkeypatch):
    obj, path = saved
    headers = []
    read = []
    real_read = torch_io._CheckpointUnpickler.read_storages
    monkeypatch.setattr(torch_io._CheckpointUnpickler, "read_storages", lambda self: read.append(1) or real_read(self))

    def check(shape, dtype, nbytes):
        assert not read  # headers come before the storages are read
        headers.append((shape, dtype, nbytes))

    torch_io.load_torch_file(path, check_tensor=check)
    assert read == [1] and len(headers) == 2 + 13 + 2  # the encoder's two, the "tensors", the list's two
    assert ((2, 3), np.dtype(np.int32), 24) in headers  # "int"
    assert ((3, 5), np.dtype(np.float32), (2 * 8 + 4 + 1) * 4) in headers  # "offset_view": rows 2-4, cols 3-7
    assert ((3, 4), np.dtype(np.float32), 4 * 4) in headers  # "expanded": stride 0, one row of storage
    assert ((0, 3), np.dtype(np.float32), 0) in headers  # "empty"

    def refuse(shape, dtype, nbytes):
        raise ValueError(f"refused {shape}")

    read.clear()
    with pytest.raises(ValueError, match="refused"):
        torch_io.load_torch_file(path, check_tensor=refuse)
    assert not read


def test_an_oversized_pickle_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w") as f:
            for _ in range(65):
                f.write(bytes(1 << 20))
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match="bomb.pt.*68157440 bytes unpacked.*at most 64 MB"):
        torch_io.load_torch_file(path)
