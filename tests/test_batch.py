"""Batch and long-form synthesis (mlx_tts.batch): input reading, manifests and checksums, resuming after lost
files and crashed workers, Ray workers, books joined with chapter marks and captions.

Synthesis runs the tiny random Kokoro at speed 4 with Spanish G2P (espeak: loads in a fraction of a second),
so that each unit takes about a second. The Ray tests share one local cluster (2 CPUs) for the module."""

import csv
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_tts import batch
from mlx_tts.batch import AudioSink, InputError, Settings, UnitWorker, plan_threads, run_batch
from mlx_tts.captions import CUE_MAX_S, CUE_MAX_WORDS
from mlx_tts.longform_input import file_stem, markdown_to_text, read_input, split_chapters

REPO = Path(__file__).resolve().parents[1]
LONG_SENTENCE = "Mañana vamos todos juntos a la playa con los amigos de mi hermano pequeño."  # 13 words
SPANISH = ["Hola.", "Sí.", "Adiós.", "Gracias.", "Buenos días.", "Claro.", "Bien.", "Vale.", "Uno.", "Hasta luego."]


def settings_for(model, **changes) -> Settings:
    return Settings(**{"model": str(model), "lang": "e", "speed": 4.0, **changes})


def write_csv(path, rows, header=("id", "text", "voice", "lang")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def manifest(outdir) -> list:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-batch.txt")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mlx_tiny(tiny_model):
    """The tiny Kokoro's MLX folder: Ray workers load it as it is, without converting it each."""
    return str(tiny_model.path)


# ---- reading input -------------------------------------------------------------------------------------


def test_text_chapters_split_at_headings_and_keep_wrapped_sentences_whole():
    text = ("Front matter.\n\nChapter 1\n\nIt was a dark night. Part of the plan was\nto leave.\n\n"
            "CHAPTER TWO: The Sea\nThe sea was calm.\n")
    assert split_chapters(text) == [
        ("Front matter.", "Front matter."),
        ("Chapter 1", "Chapter 1\nIt was a dark night. Part of the plan was to leave."),
        ("CHAPTER TWO: The Sea", "CHAPTER TWO: The Sea\nThe sea was calm."),
    ]
    # No headings: runs of two or more blank lines end a chapter; one blank line ends a paragraph.
    assert split_chapters("One a.\n\nOne b.\n\n\n\nTwo.") == [("One a.", "One a.\nOne b."), ("Two.", "Two.")]


def test_markdown_is_read_as_a_reader_would_say_it():
    md = ("---\ntitle: x\n---\n# The **Start**\nSome *emph*, [a link](http://x) and `code`.\n\n```\nprint(1)\n```\n"
          "- item one\n- item two\n\n## Next\n> quoted ![img](a.png)\n")
    assert split_chapters(markdown_to_text(md), markdown=True) == [
        ("The Start", "The Start\nSome emph, a link and code.\nitem one\nitem two"),
        ("Next", "Next\nquoted"),
    ]


def make_epub(path):
    """An EPUB 3 with a table of contents, a cover page without text, two chapters (the second a sentence too
    long for one caption) and a note outside the reading order, written with ebooklib."""
    epub = pytest.importorskip("ebooklib.epub", reason="ebooklib is missing: pip install -r requirements.txt")
    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title("Un libro pequeño")
    book.set_language("es")
    pages = {
        "cover": "<div><img src='cover.png' alt=''/></div>",
        "c1": "<h1>El comienzo</h1><p>Hola a\n todos.</p><p>Buenos <i>días</i>.</p>",
        "c2": f"<h2>El final</h2><p>{LONG_SENTENCE}</p>",
        "note": "<p>Una nota.</p>",
    }
    items = {}
    for name, body in pages.items():
        items[name] = epub.EpubHtml(title=name, file_name=f"{name}.xhtml", lang="es")
        items[name].content = body
        book.add_item(items[name])
    book.toc = [items["c1"], items["c2"]]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", items["cover"], items["c1"], items["c2"], (items["note"].id, "no")]
    epub.write_epub(str(path), book)
    return path


def test_epub_chapters_come_from_the_spine(tmp_path):
    source = read_input(make_epub(tmp_path / "libro.epub"))
    assert (source.kind, source.title) == ("book", "Un libro pequeño")
    assert [(u.id, u.title, u.text) for u in source.units] == [
        ("ch001", "El comienzo", "El comienzo\nHola a todos.\nBuenos días."),
        ("ch002", "El final", f"El final\n{LONG_SENTENCE}"),
    ]


def test_dataset_rows(tmp_path):
    csv_path = write_csv(tmp_path / "rows.csv", [("a", "Hola.", "", ""), ("b/2", '"Sí", dijo.', "am_test", "e"),
                                                 ("c", "", "", "")])
    units = read_input(csv_path).units
    assert [(u.id, u.text, u.voice, u.lang, u.error) for u in units] == [
        ("a", "Hola.", None, None, None), ("b/2", '"Sí", dijo.', "am_test", "e", None),
        ("c", "", None, None, "row 4: the text is empty")]
    assert file_stem("b/2") != file_stem("b_2") and "/" not in file_stem("b/2") and file_stem("a") == "a"
    headerless = tmp_path / "plain.csv"
    headerless.write_text("x,Uno.\ny,Dos, tres,af_test,e,extra\n", encoding="utf-8")
    x, y = read_input(headerless).units
    assert (x.id, x.text, x.error) == ("x", "Uno.", None)
    assert "6 fields" in y.error and "double quotes" in y.error
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"id": "j1", "text": "Hola."}\n\n{not json\n["a"]\n', encoding="utf-8")
    j1, bad, wrong = read_input(jsonl).units
    assert (j1.id, j1.text, j1.error) == ("j1", "Hola.", None)
    assert bad.error.startswith("line 3: not a JSON object") and "got list" in wrong.error
    duplicated = write_csv(tmp_path / "dup.csv", [("a", "Uno."), ("a", "Dos.")], header=("id", "text"))
    with pytest.raises(InputError, match="ids must be unique.*'a'"):
        read_input(duplicated)
    with pytest.raises(InputError, match="can't read .docx"):
        read_input(tmp_path / "book.docx")


def test_threads_per_worker_fit_the_cpus():
    assert plan_threads(2, None, 16, 16) == 8
    assert plan_threads(3, None, 8, 4) == 2
    with pytest.raises(InputError, match="4 workers x 1 threads need 4 CPUs, but Ray sees 2"):
        plan_threads(4, None, 2, 2)
    with pytest.raises(InputError, match="lower --workers or --threads"):
        plan_threads(2, 4, 8, 4 - 1)


def test_mp3_round_trip(tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-batch.txt")
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000).astype(np.float32)
    path = tmp_path / "tone.mp3"
    with AudioSink(str(path), 24000, "mp3") as sink:
        sink.write(tone[:10000])
        sink.write(tone[10000:])
    decoded, rate = sf.read(str(path), dtype="float32")
    assert rate == 24000 and len(decoded) == len(tone)  # libsndfile drops the encoder's padding
    assert np.corrcoef(decoded, tone)[0, 1] > 0.99


# ---- runs in process -----------------------------------------------------------------------------------


def test_failed_units_are_recorded_and_the_rest_go_on(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join([
        json.dumps({"id": "good", "text": SPANISH[0]}),
        json.dumps({"id": "empty", "text": "  "}),
        "{broken",
        json.dumps({"id": "voice", "text": SPANISH[1], "voice": "nobody"}),
        json.dumps({"id": "lang", "text": SPANISH[2], "lang": "xx"}),
        json.dumps({"id": "silent", "text": "..."}),
    ]), encoding="utf-8")
    monkeypatch.setattr(batch, "ray_available", lambda: False)  # 2 workers without Ray: in process, with a warning
    with caplog.at_level(logging.WARNING, logger="mlx_tts"):
        summary = run_batch(rows, tmp_path / "out", settings_for(tiny_checkpoint), workers=2)
    assert "Ray is not installed" in caplog.text
    assert (summary.made, summary.failed, summary.exit_status) == (1, 5, 5)
    errors = dict(summary.failures)
    assert errors["empty"] == "line 2: the text is empty"
    assert errors["line3"].startswith("line 3: not a JSON object")
    assert "unknown voice 'nobody'" in errors["voice"] and "af_test, am_test" in errors["voice"]
    assert "Unknown lang_code 'xx'" in errors["lang"]
    assert "nothing pronounceable" in errors["silent"]
    records = {r["id"]: r for r in manifest(tmp_path / "out")}
    assert records["voice"]["error"] == errors["voice"] and records["voice"]["file"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav", "manifest.jsonl"]


def test_resume_redoes_only_lost_or_damaged_files(tmp_path, tiny_checkpoint):
    rows = write_csv(tmp_path / "rows.csv", [(f"r{i}", text, "", "") for i, text in enumerate(SPANISH[:4])])
    out = tmp_path / "out"
    settings = settings_for(tiny_checkpoint)
    first = run_batch(rows, out, settings)
    assert (first.made, first.skipped, first.failed) == (4, 0, 0)
    kept = {r["id"]: r for r in manifest(out)}
    untouched_mtime = (out / "r0.wav").stat().st_mtime_ns
    (out / "r1.wav").unlink()  # lost
    (out / "r2.wav").write_bytes((out / "r2.wav").read_bytes()[:1000])  # cut short
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "r3", "text": "a line cut by kill -')  # a record half written when the run was killed
    (out / "r3.wav.partial").write_bytes(b"half a file")
    second = run_batch(rows, out, settings)
    assert (second.made, second.skipped, second.failed) == (2, 2, 0)
    assert (out / "r0.wav").stat().st_mtime_ns == untouched_mtime
    assert not list(out.glob("*.partial"))
    records = manifest(out)
    assert [r["id"] for r in records] == ["r0", "r1", "r2", "r3"]  # compacted: one line per unit, input order
    for record in records:
        assert record["sha256"] == sha256(out / record["file"])
    # Same seed, same unit id: the redone files are the very same audio.
    assert [r["sha256"] for r in records] == [kept[f"r{i}"]["sha256"] for i in range(4)]
    # Settings that change the audio change the key, so a finished unit counts as not made for them.
    unit = read_input(rows).units[0]
    for changed in (dict(voice="am_test"), dict(speed=3.0), dict(format="flac"), dict(seed=1)):
        assert not batch.is_finished(records[0], settings_for(tiny_checkpoint, **changed).unit_key(unit), out)
    assert not batch.is_finished(records[0], settings_for("another/model").unit_key(unit), out)
    assert batch.is_finished(records[0], settings.unit_key(unit), out)


def test_kill_9_loses_at_most_the_unit_in_flight(tmp_path, tiny_checkpoint):
    texts = SPANISH[:2] + [" ".join(SPANISH)] * 2  # longer last units: the run is still busy when it is killed
    rows = write_csv(tmp_path / "rows.csv", [(f"r{i}", text, "", "") for i, text in enumerate(texts)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mlx_tts.batch", str(rows), "-o", str(out), "--model", str(tiny_checkpoint),
               "--lang", "e", "--speed", "4"]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    lines = out / "manifest.jsonl"
    while not lines.is_file() or lines.read_bytes().count(b"\n") < 2:  # kill it once 2 units are recorded
        assert run.poll() is None, f"the run ended with {run.returncode} before it could be killed"
        assert time.monotonic() < deadline, "the run made no 2 units in 300 s"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done = list(batch.Manifest(lines).records())  # a line per finished unit (a last one may be cut short)
    resumed = run_batch(rows, out, settings_for(tiny_checkpoint))
    assert (resumed.skipped, resumed.made, resumed.failed) == (len(done), 4 - len(done), 0)
    assert [r["id"] for r in manifest(out)] == ["r0", "r1", "r2", "r3"]
    assert all(r["sha256"] == sha256(out / r["file"]) for r in manifest(out))


def srt_cues(path) -> list:
    """[(start_s, end_s, text)] of an SRT file."""
    def seconds(stamp):
        h, m, s = stamp.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    cues = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        _, times, text = block.split("\n")
        start, end = times.split(" --> ")
        cues.append((seconds(start), seconds(end), text))
    return cues


def test_epub_book_joined_with_chapter_marks_and_captions(tmp_path, tiny_checkpoint):
    pytest.importorskip("av", reason="PyAV is not installed: pip install -r requirements-batch.txt")
    out = tmp_path / "book"
    summary = run_batch(make_epub(tmp_path / "libro.epub"), out, settings_for(tiny_checkpoint, format="mp3"),
                        chapter_gap_s=0.5)
    assert (summary.kind, summary.made, summary.failed) == ("book", 2, 0)
    records = manifest(out)
    assert [(r["id"], r["title"], r["file"]) for r in records] == [
        ("ch001", "El comienzo", "ch001.mp3"), ("ch002", "El final", "ch002.mp3")]
    index = json.loads((out / "chapters.json").read_text(encoding="utf-8"))
    first, second = index["chapters"]
    assert first["start_s"] == 0 and first["end_s"] == pytest.approx(records[0]["seconds"], abs=1e-3)
    assert second["start_s"] == pytest.approx(first["end_s"] + 0.5, abs=1e-3)
    assert sf.info(str(out / "book.mp3")).duration == pytest.approx(second["end_s"], abs=1e-3)
    # Captions as the captions module groups words: short cues (the long sentence is cut), in order, each
    # within its chapter, saying every word of the chapter (times are rounded to the millisecond on the way).
    cues, ms = srt_cues(out / "book.srt"), 1e-3
    assert all(len(text.split()) <= CUE_MAX_WORDS and 0 <= end - start <= CUE_MAX_S + ms for start, end, text in cues)
    assert all(a[1] <= b[0] + ms for a, b in zip(cues, cues[1:]))
    for chapter, record in zip(index["chapters"], records):
        said = [text for start, end, text in cues if chapter["start_s"] - ms <= start and end <= chapter["end_s"] + ms]
        assert " ".join(said).split() == record["text"].split()
    assert set(summary.book) == {out / "book.mp3", out / "chapters.json", out / "book.srt"}
    book_mtime = (out / "book.mp3").stat().st_mtime_ns
    again = run_batch(tmp_path / "libro.epub", out, settings_for(tiny_checkpoint, format="mp3"), chapter_gap_s=0.5)
    assert (again.made, again.skipped) == (0, 2) and (out / "book.mp3").stat().st_mtime_ns == book_mtime


def test_command_line_with_a_model_path(tmp_path, tiny_checkpoint, capsys):
    rows = write_csv(tmp_path / "rows.csv", [("ok", SPANISH[3], "am_test", ""), ("bad", SPANISH[4], "nobody", "")])
    with pytest.raises(SystemExit) as exit:
        batch.main([str(rows), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint), "--lang", "e",
                    "--speed", "4", "--format", "flac"])
    assert exit.value.code == 1  # one unit failed
    printed = capsys.readouterr()
    assert "Made 1 of 2 units" in printed.out and "failed bad: unknown voice 'nobody'" in printed.out
    assert "units" in printed.err  # the progress bar
    (record,) = [r for r in manifest(tmp_path / "out") if r["id"] == "ok"]
    assert (record["voice"], record["file"]) == ("am_test", "ok.flac")
    assert sf.info(str(tmp_path / "out" / "ok.flac")).format == "FLAC"
    with pytest.raises(SystemExit) as exit:
        batch.main([str(tmp_path / "missing.csv"), "-o", str(tmp_path / "out2")])
    assert exit.value.code == batch.NOT_STARTED_STATUS
    assert "missing.csv: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        batch.main([str(rows), "-o", str(tmp_path / "out3"), "--model", str(tmp_path / "no-model")])
    assert exit.value.code == batch.NOT_STARTED_STATUS
    assert "error: the model did not load:" in capsys.readouterr().err


# ---- runs on Ray ---------------------------------------------------------------------------------------


def test_dataset_on_two_ray_workers(tmp_path, ray_cluster, mlx_tiny):
    rows = [(f"row{i:02d}", text, "am_test" if i % 3 == 0 else "", "") for i, text in enumerate(SPANISH)]
    path = write_csv(tmp_path / "rows.csv", rows)
    out = tmp_path / "out"
    summary = run_batch(path, out, settings_for(mlx_tiny), workers=2)
    assert (summary.made, summary.failed, summary.exit_status) == (10, 0, 0)
    records = manifest(out)
    assert [r["id"] for r in records] == [row[0] for row in rows]
    for (_, text, voice, _), record in zip(rows, records):
        info = sf.info(str(out / record["file"]))
        assert (record["text"], record["voice"], record["lang"]) == (text, voice or "af_test", "e")
        assert record["sha256"] == sha256(out / record["file"])
        assert record["sample_rate"] == info.samplerate == 24000
        assert record["seconds"] == pytest.approx(info.duration, abs=1e-3) and record["seconds"] > 0
    workers = {r["worker"] for r in records}
    assert len(workers) == 2 and not any(w.endswith(f":{os.getpid()}") for w in workers)  # two actors, not us
    # The key does not depend on how a unit was made: the same command in process has nothing left to do.
    again = run_batch(path, out, settings_for(mlx_tiny))
    assert (again.made, again.skipped) == (0, 10)


def crashing_worker(marker: str):
    """A worker that raises on unit r1 and dies (the whole process) the first time it speaks unit r3."""

    class CrashingWorker(UnitWorker):
        def run(self, unit):
            if unit.id == "r1":
                raise RuntimeError("simulated failure in the worker")
            if unit.id == "r3" and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().run(unit)

    return CrashingWorker


def test_resume_after_a_worker_crash(tmp_path, ray_cluster, mlx_tiny):
    path = write_csv(tmp_path / "rows.csv", [(f"r{i}", text, "", "") for i, text in enumerate(SPANISH[:5])])
    out = tmp_path / "out"
    summary = run_batch(path, out, settings_for(mlx_tiny), workers=2,
                        worker_class=crashing_worker(str(tmp_path / "crashed")))
    errors = dict(summary.failures)
    assert (summary.made, summary.failed) == (3, 2)
    assert errors["r1"] == "RuntimeError: simulated failure in the worker"
    assert errors["r3"].startswith("the worker was lost while speaking this unit")
    assert {r["id"] for r in manifest(out) if r["file"]} == {"r0", "r2", "r4"}
    resumed = run_batch(path, out, settings_for(mlx_tiny))
    assert (resumed.made, resumed.skipped, resumed.failed) == (2, 3, 0)
    assert all(r["sha256"] == sha256(out / r["file"]) for r in manifest(out))
