"""Voice files as `torch.save` writes them, of any size, without torch's memory: for tests and benchmarks of
the voice bounds (an upload that declares a gigabyte of rows in under a megabyte)."""

import collections
import io
import pickle
import zipfile


def write_torch_style_pt(path, rows, chunk_rows=4096):
    """A voice file as torch.save writes one (`archive/data.pkl` naming torch's rebuild function and a
    FloatStorage, `archive/data/0` the zero storage), but deflate-compressed and streamed: a pack of any
    `rows` is built without ever holding it in memory."""
    import torch

    storage = object()

    class Tensor:
        def __reduce__(self):
            size, stride = (rows, 1, 256), (256, 256, 1)
            return torch._utils._rebuild_tensor_v2, (storage, 0, size, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", rows * 256) if obj is storage else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump(Tensor())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", data.getvalue())
        archive.writestr("archive/byteorder", "little")
        with archive.open("archive/data/0", "w") as f:
            zeros = bytes(chunk_rows * 256 * 4)
            for start in range(0, rows, chunk_rows):
                f.write(zeros[: (min(rows, start + chunk_rows) - start) * 256 * 4])
        archive.writestr("archive/version", "3")
    return path
