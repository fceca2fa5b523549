"""The studio's policy (studio/policy.py) and error reporting, without a server: path confinement, the model
allowlist, voice files, upload checks, settings given as text, splitters, the work area and unsafe pickles."""

import logging
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import soundfile as sf

from mlx_tts.cache import cache_dir
from mlx_tts.errors import MlxTtsError
from mlx_tts.models.kokoro import VoiceBank
from studio.policy import (
    LAB,
    MAX_SEED,
    PUBLIC,
    SPLITTERS,
    Policy,
    StudioError,
    WorkArea,
    check_audio_upload,
    check_bits,
    check_group_size,
    check_seed,
    default_mode,
)


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "models" / "mine").mkdir(parents=True)
    return Policy(LAB, output_root=tmp_path / "out", model_roots=[tmp_path / "models"], upload_root=tmp_path / "up")


@pytest.fixture
def public(tmp_path):
    return Policy(PUBLIC, allowed_models=["prince-canuma/Kokoro-82M", "org/extra"], upload_root=tmp_path / "up")


def test_mode_follows_the_space(monkeypatch):
    assert default_mode({"SPACE_ID": "someone/studio"}) == PUBLIC
    assert default_mode({}) == LAB
    with pytest.raises(ValueError, match="at least one allowed model"):
        Policy(PUBLIC)


def test_relative_folder_names_resolve_inside_the_output_root(lab):
    assert lab.output_folder("kokoro-8bit") == lab.output_root / "kokoro-8bit"
    assert lab.output_folder("runs/today/q4") == lab.output_root / "runs/today/q4"
    assert lab.output_folder(str(lab.output_root / "abs-inside")) == lab.output_root / "abs-inside"


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/studio", "~/studio"])
def test_folders_outside_the_output_root_are_refused(lab, name):
    with pytest.raises(StudioError, match="outside the output folder"):
        lab.output_folder(name)


def test_a_symlink_out_of_the_output_root_is_refused(lab, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (lab.output_root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StudioError, match="outside the output folder"):
        lab.output_folder("link/model")
    with pytest.raises(StudioError, match="outside the folders this studio loads models from"):
        lab.model_source("link")


def test_saving_onto_an_existing_file_or_full_folder_is_refused(lab):
    (lab.output_root / "taken").write_text("x")
    (lab.output_root / "full").mkdir()
    (lab.output_root / "full" / "config.json").write_text("{}")
    with pytest.raises(StudioError, match="is an existing file"):
        lab.output_folder("taken")
    with pytest.raises(StudioError, match="not empty"):
        lab.output_folder("full")
    (lab.output_root / "empty").mkdir()
    assert lab.output_folder("empty").is_dir()


def test_public_mode_saves_nothing_and_offers_only_the_allowlist(public):
    with pytest.raises(StudioError, match="saves nothing on the server"):
        public.output_folder("kokoro-8bit")
    assert public.model_source("org/extra") == "org/extra"
    for model in ["/etc", "other/repo", str(cache_dir()), "../prince-canuma/Kokoro-82M"]:
        with pytest.raises(StudioError, match="not offered here; pick one of: prince-canuma/Kokoro-82M, org/extra"):
            public.model_source(model)


def test_lab_models_load_from_the_roots_or_the_hub(lab, tmp_path):
    (lab.output_root / "q8").mkdir()
    assert lab.model_source("q8") == str(lab.output_root / "q8")  # a saved folder, by its name
    assert lab.model_source(str(tmp_path / "models" / "mine")) == str(tmp_path / "models" / "mine")
    assert lab.model_source(str(cache_dir() / "converted" / "x")).startswith(str(cache_dir()))
    assert lab.model_source("prince-canuma/Kokoro-82M") == "prince-canuma/Kokoro-82M"
    for outside in ["/etc", str(tmp_path), "../../etc", "/nonexistent/folder", "tests"]:
        with pytest.raises(StudioError, match="--model-dir"):
            lab.model_source(outside)


def test_voice_files_only_from_the_model_or_uploads(lab, tmp_path):
    model = tmp_path / "models" / "mine"
    (model / "voices").mkdir()
    (tmp_path / "up").mkdir()
    for folder in (model / "voices", tmp_path / "up", tmp_path):
        np.save(folder / "v.npy", np.zeros((510, 1, 256), np.float32))
    names = ["af_a", "af_b"]
    assert lab.check_voice("af_a(2)+af_b(1)", names, model) == "af_a(2)+af_b(1)"
    assert lab.check_voice("zz_unknown", names, model) == "zz_unknown"  # the voice bank names what exists
    assert lab.check_voice(str(tmp_path / "up" / "v.npy"), names, model)
    assert lab.check_voice(f"af_a(1)+{model / 'voices' / 'v.npy'}(1)", names, model)
    for voice in [str(tmp_path / "v.npy"), "/etc/passwd", f"af_a+{tmp_path / 'v.npy'}", "../v.npy"]:
        with pytest.raises(StudioError, match="not one of this model's voices or an upload"):
            lab.check_voice(voice, names, model)
    (tmp_path / "up" / "huge.npy").write_bytes(b"\0" * (3 * 2**20))
    with pytest.raises(StudioError, match="at most 2 MB"):
        lab.check_voice(str(tmp_path / "up" / "huge.npy"), names, model)


def test_splitters(lab, public):
    assert public.check_splitter("sentences") == SPLITTERS["sentences"]
    assert public.check_splitter("none") is None and public.check_splitter(None) == r"\n+"
    with pytest.raises(StudioError, match="Unknown splitter '\\(a\\+\\)\\+b'; choose one of: lines, sentences"):
        public.check_splitter("(a+)+b")
    assert lab.check_splitter("(a+)+b") == "(a+)+b"  # lab mode: run with the pipeline's time limit


def test_seeds_and_quantization_settings_given_as_text():
    assert check_seed(0) == 0 and check_seed("42") == 42 and check_seed(7.0) == 7 and check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 2**64, 1.5, "x", None, float("inf")):
        with pytest.raises(StudioError, match="seed must be"):
            check_seed(bad)
    assert check_bits("4") == 4 and check_bits(8) == 8 and check_group_size("128") == 128
    with pytest.raises(StudioError, match="Bits must be one of 2, 3, 4, 5, 6, 8, got '7'"):
        check_bits("7")
    with pytest.raises(StudioError, match="Group size must be one of 32, 64, 128"):
        check_group_size("sixty-four")


def wav_header(rate: int, frames: int) -> bytes:
    """A 16-bit mono WAV header declaring `rate` and `frames`, followed by a few real samples."""
    data = frames * 2
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + fmt
            + b"data" + struct.pack("<I", data) + b"\0" * 200)


def test_uploads_are_checked_by_decoding_not_by_name(tmp_path):
    good = tmp_path / "clip.bin"  # any name: what counts is what decodes
    sf.write(good, np.zeros(24000, np.float32), 24000, format="WAV")
    assert check_audio_upload(good)["sample_rate"] == 24000
    (tmp_path / "fake.wav").write_text("this is not audio")
    with pytest.raises(StudioError, match="fake.wav is not audio the studio can read"):
        check_audio_upload(tmp_path / "fake.wav")
    (tmp_path / "fast.wav").write_bytes(wav_header(50_000_000, 100))
    with pytest.raises(StudioError, match="declares 50000000 Hz; the studio takes 8000 to 192000 Hz"):
        check_audio_upload(tmp_path / "fast.wav")
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 130, np.int16), 8000, subtype="PCM_16")
    with pytest.raises(StudioError, match="lasts 130.0 s"):
        check_audio_upload(tmp_path / "long.wav")
    (tmp_path / "big.wav").write_bytes(wav_header(24000, 12 * 2**20) + b"\0" * (24 * 2**20))
    with pytest.raises(StudioError, match="at most 20 MB"):
        check_audio_upload(tmp_path / "big.wav")


class _CreatesAFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_uploaded_pt_voice_whose_pickle_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_CreatesAFile(str(marker)), protocol=2)
    with zipfile.ZipFile(tmp_path / "voice.pt", "w") as archive:  # torch.save's layout
        archive.writestr("voice/data.pkl", payload)
        archive.writestr("voice/version", "3\n")
    (tmp_path / "legacy.pt").write_bytes(payload)  # torch.save's pre-zip format: a bare pickle
    bank = VoiceBank(tmp_path / "no-model")
    for upload in ("voice.pt", "legacy.pt"):
        with pytest.raises(MlxTtsError, match=upload):
            bank.resolve(str(tmp_path / upload))
    assert not marker.exists()


def test_stale_work_folders_are_deleted_at_start(tmp_path):
    base = tmp_path / "area"
    (base / "999999999-dead").mkdir(parents=True)  # no such process
    (base / f"{os.getppid()}-alive").mkdir()
    (base / "notes").mkdir()
    area = WorkArea(base)
    assert sorted(p.name for p in base.iterdir()) == sorted([f"{os.getppid()}-alive", "notes", area.path.name])
    assert area.path.name.startswith(f"{os.getpid()}-")


def test_unexpected_errors_are_internal_errors_with_an_id_in_the_log(caplog):
    import gradio as gr

    from studio.widgets import ui_errors

    @ui_errors
    def broken():
        raise KeyError("secret detail")

    @ui_errors
    def refused():
        raise StudioError("The seed must be from 0 to 4294967295, got -1")

    with caplog.at_level(logging.ERROR, logger="mlx_tts.studio"), pytest.raises(gr.Error) as error:
        broken()
    message = error.value.message
    assert message.startswith("Internal error (id ") and "secret" not in message
    error_id = message.split("(id ")[1].split(")")[0]
    assert error_id in caplog.text and "KeyError: 'secret detail'" in caplog.text  # the traceback, under the id
    with pytest.raises(gr.Error, match="got -1"):
        refused()
