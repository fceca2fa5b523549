"""python -m mlx_tts.generate, end to end on the tiny random Kokoro."""

import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def generate(args, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mlx_tts.generate", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )


def test_text_from_stdin_joined_flac_and_play_without_a_device(tiny_model, tmp_path):
    prefix = tmp_path / "take"
    run = generate(
        ["--model", str(tiny_model.path), "--voice", "af_test", "--speed", "4", "--file_prefix", str(prefix),
         "--audio_format", "flac", "--join_audio", "--play", "--seed", "1"],
        stdin="Hello there.\nSecond line.",
    )
    assert run.returncode == 0, run.stderr
    audio, rate = sf.read(prefix.with_suffix(".flac"))
    assert rate == 24000 and len(audio) > 0
    assert "real-time factor" in run.stdout and "peak memory" in run.stdout
    assert f"Audio: {len(audio) / 24000:.2f} s" in run.stdout
    assert "Can't play audio here" in run.stderr  # no audio device on a server: a message, and the file is kept


def test_one_file_per_chunk_and_bad_input(tiny_model, tmp_path):
    prefix = tmp_path / "chunk"
    run = generate(["--model", str(tiny_model.path), "--voice", "am_test", "--speed", "4", "--text", "One.\nTwo.",
                    "--file_prefix", str(prefix)])
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.glob("chunk*.wav")) == ["chunk_000.wav", "chunk_001.wav"]
    bad = generate(["--model", str(tiny_model.path), "--voice", "af_test", "--text", "Hi.", "--speed", "9"])
    assert bad.returncode != 0 and "speed must be between 0.25 and 4" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_single_take_is_prefix_dot_wav(tiny_model, tmp_path):
    run = generate(["--model", str(tiny_model.path), "--voice", "af_test", "--speed", "4", "--text", "Hello.",
                    "--file_prefix", str(tmp_path / "hello")])
    assert run.returncode == 0, run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["hello.wav"]
    assert f"Wrote {tmp_path / 'hello.wav'}" in run.stdout
    audio, rate = sf.read(tmp_path / "hello.wav")
    assert rate == 24000 and len(audio) > 0


def test_the_installed_project_runs_from_any_folder(tiny_model, tmp_path):
    """`pip install -e .` (in requirements-dev.txt, as the README says) puts this checkout on every path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-m", "mlx_tts.generate", "--model", str(tiny_model.path), "--voice", "af_test", "--speed",
         "4", "--text", "Hello.", "--file_prefix", "hello"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "hello.wav").exists()
    where = subprocess.run([sys.executable, "-c", "import mlx_tts, studio; print(mlx_tts.__file__, studio.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(ROOT) for p in where.stdout.split()), where.stdout


def test_csm_cloning_from_the_command_line(tmp_path):
    from tiny_csm import speech_like, tiny_mlx_csm_folder

    folder = tiny_mlx_csm_folder(tmp_path / "tiny-csm")
    sf.write(tmp_path / "reference.wav", speech_like(1.5), 24000)
    args = ["--model", str(folder), "--text", "Hello from Sesame.", "--ref_audio", str(tmp_path / "reference.wav"),
            "--temperature", "0.8", "--top_k", "20", "--seed", "3", "--max_audio_length_ms", "400"]
    takes = []
    for name in ("a", "b"):
        run = generate([*args, "--file_prefix", str(tmp_path / name), "--ref_text", "A reference sentence."])
        assert run.returncode == 0, run.stderr
        assert "real-time factor" in run.stdout
        takes.append(sf.read(tmp_path / f"{name}.wav")[0])  # one take: no chunk number
    assert 0 < len(takes[0]) <= 5 * 1920 and (takes[0] == takes[1]).all()  # 400 ms = 5 frames; seeded
    missing = generate([*args, "--file_prefix", str(tmp_path / "c")])
    assert missing.returncode != 0 and "ref_text" in missing.stderr and "Traceback" not in missing.stderr
