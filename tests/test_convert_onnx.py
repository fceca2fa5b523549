"""python -m mlx_tts.convert --from-onnx: a kokoro-onnx export and its voices -> a model folder that loads."""

import numpy as np
import pytest

from mlx_tts.convert import main as convert_main
from mlx_tts.models.kokoro import KokoroPipeline
from mlx_tts.models.kokoro.embedded import embedded_onnx_path, embedded_voices
from mlx_tts.utils import EMBEDDED_MODEL, load_model

pytestmark = pytest.mark.reference  # converts the real 92 MB export


@pytest.fixture(scope="module")
def voices_bin(tmp_path_factory):
    """kokoro-onnx's voices-v1.0.bin is an npz of [510, 1, 256] packs."""
    path = tmp_path_factory.mktemp("onnx") / "voices-v1.0.bin"
    with open(path, "wb") as f:
        np.savez(f, **embedded_voices())
    return path


def test_from_onnx_cli_gives_the_embedded_model(voices_bin, tmp_path, capsys):
    out = tmp_path / "kokoro-from-onnx"
    convert_main(["--from-onnx", str(embedded_onnx_path()), "--voices", str(voices_bin), "-o", str(out)])
    assert f"Wrote {out}" in capsys.readouterr().out
    converted, embedded = load_model(out), load_model(EMBEDDED_MODEL)
    assert sorted(p.stem for p in (out / "voices").iterdir()) == sorted(embedded_voices())
    ours = dict(converted.parameters()["bert_encoder"])
    theirs = embedded.parameters()["bert_encoder"]
    assert all(np.array_equal(np.asarray(v), np.asarray(theirs[k])) for k, v in ours.items())
    result = next(iter(KokoroPipeline("a", model=converted)("Hello.", voice="jm_kumo")))
    assert result.audio.shape[1] > 0 and np.isfinite(np.asarray(result.audio)).all()


def test_from_onnx_cli_errors(voices_bin, tmp_path):
    with pytest.raises(SystemExit, match="--voices"):
        convert_main(["--from-onnx", str(embedded_onnx_path()), "-o", str(tmp_path / "a")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty"):
        convert_main(
            ["--from-onnx", str(embedded_onnx_path()), "--voices", str(voices_bin), "-o", str(tmp_path / "full")]
        )
    assert (tmp_path / "full" / "x").read_text() == "keep me"  # nothing already made is lost
