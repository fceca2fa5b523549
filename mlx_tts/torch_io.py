"""Read PyTorch zip checkpoints (`.pt`, `.pth`) into numpy arrays, without torch and without running code.

`torch.save` writes a zip holding `<root>/data.pkl` (the object tree, pickled) and one raw file per tensor
storage, `<root>/data/<key>`. Unpickling can import and call any global the pickle names, so the unpickler
here resolves only the few globals that tensors and state dicts need and refuses every other one before
anything is imported.

Sizes come from the file, so they are checked before anything is allocated: the pickle is unpickled first
into tensor headers (shape, dtype, where the data lies), a caller's `check_tensor` sees each header, and only
then are the storages read, each only over the span its tensors use.
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


# The object tree of a checkpoint is small (a state dict of names and tensor headers): a data.pkl larger
# than this is not a checkpoint, and reading it would be a decompression bomb.
MAX_PICKLE_BYTES = 64 << 20


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


class _Storage:
    """A storage named by the pickle, not read yet: its file in the zip, element type and count."""

    def __init__(self, name, dtype, numel):
        self.name, self.dtype, self.numel = name, dtype, numel
        self.first, self.end = numel, 0  # the span of elements its tensors use, grown by each tensor
        self.data = None  # elements [first, end), once read


class _Tensor:
    """A tensor header: `storage[offset:]` seen with `size` and `stride` (in elements), data not read yet."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if 0 not in size else offset

    @property
    def nbytes(self) -> int:
        """Bytes of storage that reading this tensor takes."""
        return (self.end - self.offset) * self.storage.dtype.itemsize

    def array(self) -> np.ndarray:
        storage = self.storage
        if 0 in self.size:
            return np.empty(self.size, dtype=storage.dtype)
        view = np.lib.stride_tricks.as_strided(
            storage.data[self.offset - storage.first :],
            shape=self.size,
            strides=[s * storage.dtype.itemsize for s in self.stride],
        )
        # Contiguous tensors stay views of their storage (tensors sharing one alias, as in torch).
        return view if view.flags.c_contiguous else view.copy()


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, archive, root, path):
        super().__init__(archive.open(f"{root}/data.pkl"))
        self.archive = archive
        self.root = root
        self.path = path
        self.storages = {}
        self.tensors = []

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
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.path}: storage {key!r} has a bad element count {numel!r}")
        if key not in self.storages:
            name = f"{self.root}/data/{key}"
            try:
                info = self.archive.getinfo(name)
            except KeyError:
                raise CheckpointError(f"{self.path}: missing storage '{name}'") from None
            dtype = storage_type.dtype
            if info.file_size < numel * dtype.itemsize:
                raise CheckpointError(
                    f"{self.path}: storage '{name}' holds {info.file_size} bytes, expected {numel * dtype.itemsize}"
                )
            self.storages[key] = _Storage(name, dtype, numel)
        return self.storages[key]

    def _rebuild_tensor(self, storage, offset, size, stride, *_):
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self.path}: a tensor without a storage ({type(storage).__name__})")
        size, stride = tuple(size), tuple(stride)
        numbers = size + stride + (offset,)
        if len(size) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in numbers):
            raise CheckpointError(f"{self.path}: bad tensor size {size} / stride {stride} / offset {offset}")
        tensor = _Tensor(storage, offset, size, stride)
        if 0 not in size:
            if tensor.end > storage.numel:
                raise CheckpointError(
                    f"{self.path}: tensor of size {size}, stride {stride}, offset {offset} "
                    f"reaches past its storage of {storage.numel} elements"
                )
            storage.first, storage.end = min(storage.first, offset), max(storage.end, tensor.end)
        self.tensors.append(tensor)
        return tensor

    def read_storages(self):
        """Read each storage over the span its tensors use, no more."""
        big_endian = self._byteorder() == "big"
        for storage in self.storages.values():
            if storage.end <= storage.first:
                continue
            itemsize = storage.dtype.itemsize
            stored = storage.dtype.newbyteorder(">") if big_endian and itemsize > 1 else storage.dtype
            data = np.empty(storage.end - storage.first, dtype=stored)
            with self.archive.open(storage.name) as f:
                f.seek(storage.first * itemsize)
                if f.readinto(data.view(np.uint8)) != data.nbytes:
                    raise CheckpointError(f"{self.path}: storage '{storage.name}' is truncated")
            storage.data = data.astype(storage.dtype, copy=False)

    def _byteorder(self):
        name = f"{self.root}/byteorder"
        if name not in self.archive.namelist():
            return "little"  # written by torch versions that only saved little-endian data
        return self.archive.read(name).decode().strip()


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _plain(obj):
    """Tensor headers become arrays, OrderedDicts dicts (dropping state-dict `_metadata`), recursively
    through lists and tuples."""
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(value) for value in obj)
    return obj


def load_torch_file(path, check_tensor=None):
    """Read a PyTorch zip checkpoint. Tensors become numpy arrays (bfloat16 as `ml_dtypes.bfloat16`),
    state dicts and other mappings become plain dicts; the nesting of the saved object is kept.

    `check_tensor(shape, dtype, nbytes)` is called for every tensor before any tensor data is read (`nbytes`:
    the bytes of storage it spans); it raises to refuse the file."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (files saved by torch < 1.6 must be re-saved by a newer torch)"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one '<root>/data.pkl' in the zip, found {len(pickles)}")
        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{path}: '{pickles[0]}' is {archive.getinfo(pickles[0]).file_size} bytes unpacked; a checkpoint's "
                f"object tree takes at most {MAX_PICKLE_BYTES >> 20} MB"
            )
        root = pickles[0].split("/")[0]
        unpickler = _CheckpointUnpickler(archive, root, path)
        try:
            obj = unpickler.load()
        except (pickle.UnpicklingError, EOFError, TypeError) as e:
            raise CheckpointError(f"{path}: corrupt pickle in '{pickles[0]}': {e}") from e
        if check_tensor is not None:
            for tensor in unpickler.tensors:
                check_tensor(tensor.size, tensor.storage.dtype, tensor.nbytes)
        unpickler.read_storages()
        return _plain(obj)
