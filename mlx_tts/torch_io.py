"""Read PyTorch zip checkpoints (`.pt`, `.pth`) into numpy arrays, without torch and without running code.

`torch.save` writes a zip holding `<root>/data.pkl` (the object tree, pickled) and one raw file per tensor
storage, `<root>/data/<key>`. Unpickling can import and call any global the pickle names, so the unpickler
here resolves only the few globals that tensors and state dicts need and refuses every other one before
anything is imported.
"""

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np

from .errors import MlxTtsError


class CheckpointError(MlxTtsError, ValueError):
    """A file that is not a readable PyTorch zip checkpoint, or one that names a forbidden global."""


# The storage classes a pickle names (`torch.FloatStorage`, ...) and the element type each one stores.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    """Stands in for a `torch.<X>Storage` class: only its element type matters."""

    def __init__(self, dtype):
        self.dtype = dtype


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, archive, root, path):
        super().__init__(archive.open(f"{root}/data.pkl"))
        self.archive = archive
        self.root = root
        self.path = path
        self.storages = {}
        self.big_endian = self._byteorder() == "big"

    def _byteorder(self):
        name = f"{self.root}/byteorder"
        if name not in self.archive.namelist():
            return "little"  # written by torch versions that only saved little-endian data
        return self.archive.read(name).decode().strip()

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): OrderedDict,
        }
        if (module, name) not in allowed:
            raise CheckpointError(
                f"{self.path}: refusing to unpickle the global '{module}.{name}' "
                "(only tensors, parameters and state dicts can be read)"
            )
        return allowed[(module, name)]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has no storage type ({storage_type!r})")
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self.storages[key]

    def _read_storage(self, key, dtype, numel):
        name = f"{self.root}/data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: missing storage '{name}'") from None
        if info.file_size < numel * dtype.itemsize:
            raise CheckpointError(
                f"{self.path}: storage '{name}' holds {info.file_size} bytes, expected {numel * dtype.itemsize}"
            )
        stored = dtype.newbyteorder(">") if self.big_endian and dtype.itemsize > 1 else dtype
        storage = np.empty(numel, dtype=stored)
        with self.archive.open(info) as f:
            f.readinto(storage.view(np.uint8))
        return storage.astype(dtype, copy=False)

    def _rebuild_tensor(self, storage, offset, size, stride, *_):
        """The tensor `storage[offset:]` seen with `size` and `stride` (in elements), as its own array."""
        size, stride = tuple(size), tuple(stride)
        if len(size) != len(stride) or min(size + stride, default=0) < 0:
            raise CheckpointError(f"{self.path}: bad tensor size {size} / stride {stride}")
        if 0 in size:
            return np.empty(size, dtype=storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or last >= storage.size:
            raise CheckpointError(
                f"{self.path}: tensor of size {size}, stride {stride}, offset {offset} "
                f"reaches past its storage of {storage.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]
        )
        # Contiguous tensors stay views of their storage (tensors sharing one alias, as in torch).
        return view if view.flags.c_contiguous else view.copy()


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _plain(obj):
    """OrderedDicts become dicts (dropping state-dict `_metadata`), recursively through lists and tuples."""
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(value) for value in obj)
    return obj


def load_torch_file(path):
    """Read a PyTorch zip checkpoint. Tensors become numpy arrays (bfloat16 as `ml_dtypes.bfloat16`),
    state dicts and other mappings become plain dicts; the nesting of the saved object is kept."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (files saved by torch < 1.6 must be re-saved by a newer torch)"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one '<root>/data.pkl' in the zip, found {len(pickles)}")
        root = pickles[0].split("/")[0]
        try:
            return _plain(_CheckpointUnpickler(archive, root, path).load())
        except (pickle.UnpicklingError, EOFError, TypeError) as e:
            raise CheckpointError(f"{path}: corrupt pickle in '{pickles[0]}': {e}") from e
