"""The Kokoro tab's Long-form accordion through `gradio_client`, on a studio built in this process over the tiny
Kokoro (random weights: the audio is noise, its files and figures are what is checked)."""

import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_checkpoint):
    from studio.app import build_app
    from studio.engine import Engine
    from studio.policy import Policy

    work = tmp_path_factory.mktemp("longform_studio")
    policy = Policy(output_root=work / "out", model_roots=[tiny_checkpoint.parent])  # lab mode, as app.py makes it
    demo = build_app(Engine(work_dir=work, policy=policy), kokoro_model=str(tiny_checkpoint))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, ssr_mode=False, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False, httpx_kwargs={"timeout": 300})
    finally:
        demo.close()


def make_audio(client, path, model, **settings):
    settings = {"audio_format": "flac", "model_id": str(model), "precision": "full precision", "voice": "af_test",
                "blend": "", "lang_code": "e", "speed": 2.0, "seed": 0, **settings}
    return client.predict(path=handle_file(str(path)), api_name="/kokoro_longform", **settings)


def test_longform_book_upload_gives_a_zip_and_the_joined_book(studio, tiny_checkpoint, tmp_path):
    story = tmp_path / "cuento.txt"
    story.write_text("Sí.\n\n\nNo.\n", encoding="utf-8")  # two chapters, cut at the run of blank lines
    files, status = make_audio(studio, story, tiny_checkpoint)
    assert "Made 2 of 2 units" in status and "0 failed" in status
    names = sorted(Path(f).name for f in files)
    assert names == ["book.flac", "book.srt", f"{Path(files[0]).stem}.zip"]
    with zipfile.ZipFile(files[0]) as zf:
        assert sorted(zf.namelist()) == ["book.flac", "book.srt", "ch001.flac", "ch002.flac", "chapters.json",
                                         "manifest.jsonl"]
    book = next(f for f in files if f.endswith(".flac"))
    assert sf.info(book).samplerate == 24000 and sf.info(book).duration > 1.5  # two chapters and the gap
    # The same upload again resumes in the same folder: nothing left to make.
    files, status = make_audio(studio, story, tiny_checkpoint)
    assert "Made 0 of 2 units" in status and "2 already done" in status


def test_longform_refuses_an_unknown_voice_per_unit_and_a_missing_file(studio, tiny_checkpoint, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("id,text\nuno,Sí.\n", encoding="utf-8")
    files, status = make_audio(studio, rows, tiny_checkpoint, voice="nobody")
    assert "Made 0 of 1 units" in status and "failed uno: unknown voice 'nobody'" in status
    assert [Path(f).suffix for f in files] == [".zip"]  # a dataset has no joined book
    with pytest.raises(AppError, match="Upload a file first"):
        studio.predict(path=None, audio_format="wav", model_id=str(tiny_checkpoint), precision="full precision",
                       voice="af_test", blend="", lang_code="e", speed=1.0, seed=0, api_name="/kokoro_longform")
