"""End to end through `gradio_client`: each tab's main action against a live studio (lab mode, writing under
`work_dir/out` and loading models from `work_dir`) started by the test."""

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from studio.kokoro_tab import stream_unavailable

from studio_server import running_studio
from tiny_csm import speech_like, tiny_mlx_csm_folder

pytestmark = pytest.mark.e2e

TEXT = "こんにちは。"
VOICE = "jf_alpha"
# The studio's own check (ffmpeg on PATH): without ffmpeg it disables Stream, as tests/test_studio_app.py checks.
needs_ffmpeg = pytest.mark.skipif(stream_unavailable() is not None, reason=str(stream_unavailable()))


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("studio_api")


@pytest.fixture(scope="module")
def client(work_dir):
    with running_studio(work_dir, "--output-dir", str(work_dir / "out"), "--model-dir", str(work_dir)) as url:
        # Long timeout: a Stop (cancel) returns once the chunk being made is finished.
        yield Client(url, verbose=False, httpx_kwargs={"timeout": 300})


def kokoro_generate(client, **settings):
    settings = {"text": TEXT, "voice": VOICE, "lang_code": "j", "seed": 0, **settings}
    return client.predict(api_name="/kokoro_generate", **settings)


def read_audio(path):
    audio, rate = sf.read(path, dtype="float32")
    return audio, rate


@pytest.fixture(scope="module")
def kokoro_take(client):
    return kokoro_generate(client)


def test_kokoro_generate_gives_audio_downloads_phonemes_chunks_and_stats(kokoro_take):
    take, downloads, phonemes, chunks, stats = kokoro_take
    audio, rate = read_audio(take)
    assert rate == 24000
    assert 0.3 < len(audio) / rate < 5
    assert np.sqrt(np.mean(audio**2)) > 0.005, "the take is silent"
    assert sorted(Path(p).suffix for p in downloads) == [".flac", ".srt", ".vtt", ".wav"]
    flac, _ = read_audio(next(p for p in downloads if p.endswith(".flac")))
    assert len(flac) == len(audio)
    srt = Path(next(p for p in downloads if p.endswith(".srt"))).read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:") and TEXT in srt
    assert phonemes.strip()
    assert chunks["headers"] == ["#", "text", "phonemes", "seconds"]
    assert [row[1] for row in chunks["data"]] == [TEXT]
    assert abs(chunks["data"][0][3] - len(audio) / rate) < 0.02
    assert "real-time factor" in stats and "peak memory" in stats and "seed `0`" in stats


def test_kokoro_edited_phonemes_are_spoken(client, kokoro_take):
    original, _ = read_audio(kokoro_take[0])
    edited = "aɾiɡatoː."  # the phoneme box edited to another word
    take, _, chunks, stats = client.predict(phonemes=edited, voice=VOICE, lang_code="j", seed=0,
                                            api_name="/kokoro_phonemes")
    audio, _ = read_audio(take)
    assert [row[2] for row in chunks["data"]] == [edited]
    assert len(audio) != len(original) and np.sqrt(np.mean(audio**2)) > 0.005
    assert "real-time factor" in stats


def test_kokoro_lexicon_upload_replaces_words_and_says_which(client, kokoro_take, work_dir):
    lexicon = work_dir / "lexicon.csv"
    lexicon.write_text("word,phonemes\n今日,kʲoːkʲoː\n", encoding="utf-8")
    _, _, phonemes, _, stats = kokoro_generate(client, text="今日は。", lexicon_file=handle_file(str(lexicon)))
    assert "kʲoːkʲoː" in phonemes
    assert "Lexicon replaced: 今日" in stats
    bad = work_dir / "bad.json"
    bad.write_text('{"word": ', encoding="utf-8")
    with pytest.raises(AppError, match="not valid JSON"):
        kokoro_generate(client, lexicon_file=handle_file(str(bad)))


@needs_ffmpeg
def test_kokoro_stream_yields_chunks_then_downloads(client):
    job = client.submit(text="あ。\nい。", voice=VOICE, lang_code="j", seed=0,
                        api_name="/kokoro_stream")
    outputs = list(job)
    assert len(outputs) >= 2
    *_, last = outputs
    _, downloads, phonemes, chunks, stats = last
    assert len(chunks["data"]) == 2 and len(phonemes.splitlines()) == 2
    assert sorted(Path(p).suffix for p in downloads) == [".flac", ".srt", ".vtt", ".wav"]
    assert "real-time factor" in stats


@needs_ffmpeg
def test_kokoro_stop_ends_a_stream_and_frees_the_engine(client):
    job = client.submit(text="あ。\nい。\nう。", voice=VOICE, lang_code="j", seed=0, api_name="/kokoro_stream")
    deadline = time.monotonic() + 300
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.outputs(), "no chunk streamed"
    assert job.cancel()
    while not job.done():
        time.sleep(0.2)
    assert job.status().code == Status.CANCELLED
    assert len(job.outputs()) < 4  # three chunks and the final message, had it run to the end
    _, _, status = client.predict(api_name="/kokoro_load")
    assert "kokoro" in status


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"text": "   "}, "empty"),
        ({"text": "あ" * 5001}, "at most 5000"),
        ({"voice": "zz_nobody"}, "zz_nobody"),
        ({"split_pattern": "(unclosed"}, "not a valid regular expression"),
        ({"seed": 2**32}, "seed must be from 0 to 4294967295"),
        ({"voice": "/etc/passwd"}, "not one of this model's voices or an upload"),
        ({"model_id": "/etc"}, "outside the folders this studio loads models from"),
    ],
)
def test_kokoro_bad_input_gives_a_clear_message_and_the_server_keeps_serving(client, settings, message):
    with pytest.raises(AppError) as error:
        kokoro_generate(client, **settings)
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)
    _, _, status = client.predict(api_name="/kokoro_load")
    assert "kokoro" in status


def test_a_backtracking_split_pattern_is_refused_while_the_server_keeps_answering(client):
    job = client.submit(
        text="a" * 5000, voice=VOICE, lang_code="j", split_pattern="(a+)+b", api_name="/kokoro_generate"
    )
    # Page requests, one after another, while the pattern runs (1 s, then it is stopped). A server frozen by the
    # pattern would answer at most the one request in flight, once it is free; this one answers them all.
    answered_meanwhile = 0
    while not job.done():
        with urllib.request.urlopen(client.src, timeout=30) as page:
            assert page.status == 200
        answered_meanwhile += not job.done()
    assert answered_meanwhile >= 3
    with pytest.raises(AppError) as error:
        job.result()
    assert "The split pattern '(a+)+b' took over 1 s" in str(error.value)


def test_csm_without_weights_says_what_to_download(client):
    status = client.predict("mlx-community/csm-1b", api_name="/csm_load")
    assert "not available" in status
    assert "mlx-community/csm-1b" in status and "sesame/csm-1b" in status and "--csm-model" in status
    with pytest.raises(AppError) as error:
        client.predict(model_id="mlx-community/csm-1b", ref_audio=None, text="Hello.", api_name="/csm_generate")
    assert "hf download" in str(error.value)


@pytest.fixture(scope="module")
def tiny_csm(work_dir):
    """A loadable CSM folder with random weights and a tiny codec, and a reference clip for it."""
    folder = tiny_mlx_csm_folder(work_dir / "tiny-csm")
    sf.write(work_dir / "reference.wav", speech_like(1.5), 24000)
    return str(folder), str(work_dir / "reference.wav")


def csm_generate(client, tiny_csm, **settings):
    folder, reference = tiny_csm
    settings = {"model_id": folder, "ref_audio": handle_file(reference), "ref_text": "hello world",
                "text": "how are you today", "max_audio_length_ms": 960, "seed": 3, **settings}
    return client.predict(api_name="/csm_generate", **settings)


def test_csm_clones_with_a_tiny_model(client, tiny_csm):
    assert client.predict(tiny_csm[0], api_name="/csm_load").startswith("Ready: `csm` model")
    take, downloads, stats = csm_generate(client, tiny_csm)
    audio, rate = read_audio(take)
    assert rate == 24000 and 0 < len(audio) <= 12 * 1920  # at most 12 frames of 80 ms
    assert sorted(Path(p).suffix for p in downloads) == [".flac", ".wav"]
    assert "real-time factor" in stats and "seed `3`" in stats
    again, _, _ = csm_generate(client, tiny_csm)
    np.testing.assert_array_equal(read_audio(again)[0], audio)  # same seed, same clone


def test_csm_reference_without_transcript_is_refused(client, tiny_csm):
    with pytest.raises(AppError) as error:
        csm_generate(client, tiny_csm, ref_text="")
    assert "ref_text is required" in str(error.value)


@pytest.fixture(scope="module")
def clips(work_dir):
    t = np.arange(24000 * 4) / 24000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    paths = {
        "too-short": (tone[:12000], 24000),
        "short": (tone[: 2 * 44100], 44100),
        "clipped": (np.clip(5 * tone, -1, 1), 24000),
        "silent": (np.zeros_like(tone), 16000),
    }
    for name, (audio, rate) in paths.items():
        sf.write(work_dir / f"{name}.wav", audio.astype(np.float32), rate)
    (work_dir / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return work_dir


@pytest.mark.parametrize(
    "name, expected",
    [
        ("too-short", ["0.5 s", "Too short"]),
        ("short", ["2.0 s", "44100 Hz", "Short clip"]),
        ("clipped", ["24000 Hz", "clipped"]),
        ("silent", ["16000 Hz", "silent"]),
        ("corrupt", ["Can't use this clip", "corrupt.wav"]),
    ],
)
def test_csm_reference_clip_report(client, clips, name, expected):
    report = client.predict(handle_file(str(clips / f"{name}.wav")), api_name="/csm_reference")
    for text in expected:
        assert text in report


@pytest.fixture(scope="module")
def comparison(client):
    return client.predict(bits=8, group_size=64, recipe="uniform", text=TEXT, voice=VOICE, lang_code="j", seed=0,
                          api_name="/quant_compare")


def test_quant_compare_8bit(comparison):
    table, reference, candidate, measures, spectrograms, history = comparison
    rows = {row[0]: row[1:] for row in table["data"]}
    full_disk, quantized_disk = rows["size on disk (MB)"]
    full_memory, quantized_memory = rows["parameters in memory (MB)"]
    # Only Linear and Embedding layers quantize; Kokoro's convolutions and LSTMs stay in full precision.
    assert quantized_disk < full_disk and quantized_memory < full_memory
    assert all(value > 0 for value in rows["real-time factor"] + rows["load time (s)"])
    a, _ = read_audio(reference)
    b, _ = read_audio(candidate)
    assert abs(len(a) - len(b)) < 0.1 * len(a)
    distance = float(measures.split("log-mel distance: **")[1].split(" dB")[0])
    assert 0 <= distance < 3, "8-bit should sound nearly the same as full precision"
    # a layer whose input size (9 harmonics) no group size divides: kept in full precision, and said so
    assert "kept in full precision" in measures and "decoder.generator.m_source.l_linear" in measures
    assert Path(spectrograms).is_file()
    bits, history_distance = history["data"][0][:2]
    assert bits == 8 and abs(history_distance - distance) < 0.01


def test_quant_save_gives_a_folder_the_kokoro_tab_loads(client, comparison, work_dir):
    folder = work_dir / "out" / "kokoro-8bit"
    # bits and group size as view_api() documents them (text), a name resolved inside the output folder
    message = client.predict(bits="8", group_size="64", recipe="uniform", folder="kokoro-8bit", api_name="/quant_save")
    assert str(folder) in message
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    _, _, status = client.predict(model_id="kokoro-8bit", precision="full precision", api_name="/kokoro_load")
    assert "8-bit" in status
    for name, refusal in [("kokoro-8bit", "not empty"), ("kokoro-8bit/config.json", "is an existing file"),
                          ("../escaped", "outside the output folder"), (str(work_dir / "escaped"), "outside")]:
        with pytest.raises(AppError) as error:
            client.predict(bits=8, group_size=64, recipe="uniform", folder=name, api_name="/quant_save")
        assert refusal in str(error.value)
    assert not (work_dir / "escaped").exists()
