"""The studio's page, built in process on the tiny random Kokoro: what a newcomer sees first (English text and
language), Stream disabled with its reason when ffmpeg is missing, and the status of the kernel build."""

import shutil
import threading

import gradio as gr
import pytest

from mlx_tts import ext
from studio import app as studio_app, kokoro_tab
from studio.engine import Engine
from studio.policy import Policy

from tiny_kokoro import write_tiny_checkpoint

REAL_WHICH = shutil.which


def without_ffmpeg(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "ffmpeg" else REAL_WHICH(name, *a, **k))


def build(tiny_checkpoint, tmp_path):
    return studio_app.build_app(Engine(work_dir=tmp_path / "work"), kokoro_model=str(tiny_checkpoint))


def component(demo, elem_id):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def builders():
    return [t for t in threading.enumerate() if t.name == "mlx_tts-ext-build"]


def endpoint(demo, api_name):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_stream_unavailable_names_ffmpeg_only_when_it_is_missing(monkeypatch, tmp_path):
    ffmpeg = tmp_path / "ffmpeg"
    ffmpeg.write_text("#!/bin/sh\n")
    ffmpeg.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kokoro_tab.stream_unavailable() is None
    ffmpeg.unlink()
    assert "Stream needs ffmpeg" in kokoro_tab.stream_unavailable()


def test_without_ffmpeg_stream_is_disabled_and_says_why(monkeypatch, tmp_path, tiny_checkpoint, caplog):
    without_ffmpeg(monkeypatch)
    with caplog.at_level("WARNING", logger="mlx_tts.studio"):
        demo = build(tiny_checkpoint, tmp_path)
    assert "Stream needs ffmpeg" in caplog.text
    assert component(demo, "kokoro-stream").interactive is False
    assert "Stream needs ffmpeg" in component(demo, "kokoro-stream-unavailable").value
    stream = endpoint(demo, "kokoro_stream").fn("", "full precision", "Hello.", "af_test", "", "a", 1.0, "", 0)
    with pytest.raises(gr.Error, match="Stream needs ffmpeg"):
        next(stream)


def test_with_ffmpeg_stream_is_enabled(monkeypatch, tmp_path, tiny_checkpoint):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/ffmpeg" if name == "ffmpeg"
                        else REAL_WHICH(name, *a, **k))
    demo = build(tiny_checkpoint, tmp_path)
    assert component(demo, "kokoro-stream").interactive is not False
    with pytest.raises(StopIteration):
        component(demo, "kokoro-stream-unavailable")


def test_english_text_and_language_first(tmp_path, tiny_checkpoint):
    demo = build(tiny_checkpoint, tmp_path)
    text = component(demo, "kokoro-text").value
    lang = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Language")
    assert lang.value == "a" and text == kokoro_tab.EXAMPLES[0][0]
    assert kokoro_tab.script_mismatch(text, lang.value) is None


def test_loading_a_model_keeps_a_language_that_fits_the_text(tmp_path, tiny_checkpoint):
    japanese_only = write_tiny_checkpoint(tmp_path / "ja", voices=("jm_test", "jf_test"))  # like the embedded model
    engine = Engine(work_dir=tmp_path / "work", policy=Policy(model_roots=(tmp_path, tiny_checkpoint)))
    load = endpoint(studio_app.build_app(engine, kokoro_model=str(tiny_checkpoint)), "kokoro_load").fn
    voices, lang, _ = load(str(japanese_only), "full precision", "Hello there.")
    assert voices["value"] == "jf_test" and lang == gr.update()  # English text keeps English
    _, lang, _ = load(str(japanese_only), "full precision", "こんにちは。")
    assert lang == "j"
    voices, lang, _ = load(str(tiny_checkpoint), "full precision", "Hello there.")
    assert voices["value"] == "af_test" and lang == "a"


def test_picking_a_voice_keeps_a_language_that_fits_the_text():
    assert kokoro_tab.language_update("jf_alpha", "こんにちは。") == "j"
    assert kokoro_tab.language_update("jf_alpha", "Hello there.") == gr.update()  # stays English
    assert kokoro_tab.language_update("af_heart") == "a"
    assert kokoro_tab.default_voice(["jf_alpha", "af_heart"]) == "af_heart"
    assert kokoro_tab.default_voice(["jf_alpha", "jm_kumo"]) == "jf_alpha"


def test_the_page_says_while_the_kernels_are_being_prepared(monkeypatch, tmp_path, tiny_checkpoint):
    release, module = threading.Event(), object()

    def slow_build():
        release.wait(60)
        ext._cpu_kernels, ext._tried = module, True
        return module

    for earlier in builders():  # a real build started by another test must not finish into this one
        earlier.join(timeout=300)
    monkeypatch.setattr(ext, "_tried", False)
    monkeypatch.setattr(ext, "_cpu_kernels", None)
    monkeypatch.setattr(ext, "used", lambda: True)
    monkeypatch.setattr(ext, "cpu_kernels", slow_build)
    demo = build(tiny_checkpoint, tmp_path)
    component(demo, "kernels-status")
    assert any(isinstance(b, gr.Timer) for b in demo.blocks.values())
    assert "Preparing fast kernels" in studio_app.kernels_status()
    release.set()
    (builder,) = builders()
    builder.join(timeout=60)
    assert studio_app.kernels_status() == ""
    monkeypatch.setattr(ext, "cpu_kernels", lambda: None)  # a build that gave nothing: MLX ops are used
    assert studio_app.kernels_status() == studio_app.KERNELS_UNAVAILABLE
