"""Where the studio's engine writes what it makes: numbered folders under its work dir, the newest kept."""

import hashlib
import shutil
import threading
from pathlib import Path

import numpy as np

from mlx_tts import audio as audio_io, captions
from mlx_tts.convert import convert

KEEP_TAKES = 30  # take folders kept on disk; older ones are deleted
KEEP_EXPORTS = 2  # quantized-model zips kept on disk (public mode)


class Outputs:
    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self._number = 0
        self._lock = threading.Lock()

    def new_folder(self, kind: str = "takes", keep: int = KEEP_TAKES) -> Path:
        """A new numbered folder under `work_dir/kind`; only the newest `keep` of them stay."""
        with self._lock:
            self._number += 1
            folder = self.work_dir / kind / f"{self._number:05d}"
            folder.mkdir(parents=True)
            for old in sorted((self.work_dir / kind).iterdir())[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def write_take(self, audio: np.ndarray, kind: str, settings: dict) -> list:
        """[wav, flac] paths, named after the settings that made them."""
        folder = self.new_folder()
        named = [f"{k}{v}" if isinstance(v, (int, float)) else v for k, v in settings.items() if v not in (None, "")]
        stem = "_".join([kind] + [slug(v) for v in named])[:120]
        paths = [str(folder / f"{stem}.{fmt}") for fmt in ("wav", "flac")]
        for path in paths:
            audio_io.write_audio(path, audio, audio_io.SAMPLE_RATE, path.rsplit(".", 1)[1])
        return paths

    @staticmethod
    def write_captions(words: list, audio_path: str) -> list:
        """[srt, vtt] caption files of the word timings, beside the take's audio and named like it."""
        paths = [Path(audio_path).with_suffix(f".{fmt}") for fmt in ("srt", "vtt")]
        for path, render in zip(paths, (captions.to_srt, captions.to_vtt)):
            path.write_text(render(words), encoding="utf-8")
        return [str(p) for p in paths]

    def quantized_model(self, model_id: str, quantization) -> Path:
        """The model quantized into a folder `load_model` loads, by `mlx_tts.convert.convert` (from a fresh
        full-precision copy: quantization works in place)."""
        folder = self.work_dir / "quantized" / f"{Path(model_id).name}-{quantization.slug}"
        shutil.rmtree(folder, ignore_errors=True)
        convert(model_id, folder, quantize=True, q_bits=quantization.bits, q_group_size=quantization.group_size,
                q_recipe=quantization.recipe)
        return folder

    def discard(self, model_folder: Path):
        """Delete an evicted model's folder if it is one of ours (a quantized model: hundreds of MB)."""
        if model_folder.parent == self.work_dir / "quantized":
            shutil.rmtree(model_folder, ignore_errors=True)

    def upload_folder(self, path: Path) -> Path:
        """The folder for what is made of an upload, named by its content: the same file again, the same folder."""
        return self.work_dir / "longform" / f"{path.stem[:60]}-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"

    def zip_folder(self, name: str, write) -> Path:
        """A zip of the folder `write(folder)` fills (then deleted), in a new exports folder."""
        folder = self.new_folder("exports", KEEP_EXPORTS) / name
        write(folder)
        archive = shutil.make_archive(str(folder), "zip", folder.parent, folder.name)
        shutil.rmtree(folder)
        return Path(archive)


def slug(value) -> str:
    text = "".join(c if c.isalnum() or c in ".-" else "-" for c in str(Path(str(value)).name))
    return "-".join(filter(None, text.split("-")))
