import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from mlx_tts.audio import (
    AudioError,
    TakeError,
    audio_stats,
    check_take,
    load_audio,
    resample,
    time_stretch,
    write_audio,
)


def _tone(freq, seconds, sr, amplitude=0.5):
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(audio, sr):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sr / len(audio)


def test_resample_keeps_length_and_frequency():
    tone = _tone(1000, 1.0, 44100)
    out = resample(tone, 44100, 24000)
    assert out.dtype == np.float32 and len(out) == 24000
    assert abs(_dominant_hz(out, 24000) - 1000) < 2
    assert abs(np.sqrt(np.mean(out**2)) - 0.5 / np.sqrt(2)) < 0.01
    assert len(resample(_tone(440, 0.5, 16000), 16000, 24000)) == 12000
    with pytest.raises(AudioError, match="orig_sr"):
        resample(tone, 0, 24000)


def test_stereo_file_to_mono_at_24k(tmp_path):
    left, right = _tone(300, 0.5, 48000), _tone(300, 0.5, 48000, amplitude=0.1)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 48000)
    audio = load_audio(path)
    assert audio.ndim == 1 and audio.dtype == np.float32 and len(audio) == 12000
    assert abs(np.abs(audio[1000:-1000]).max() - 0.3) < 0.01  # the channels' mean
    assert abs(_dominant_hz(audio, 24000) - 300) < 3


def test_arrays_and_tuples():
    tone = _tone(200, 0.25, 16000)
    pcm = (tone * 32767).astype(np.int16)
    from_tuple = load_audio((pcm, 16000))
    np.testing.assert_allclose(load_audio((16000, pcm)), from_tuple)  # Gradio's (sr, array) order
    assert len(from_tuple) == 6000 and abs(np.abs(from_tuple).max() - 0.5) < 0.01
    channels_first = np.stack([tone, tone])  # [channels, frames]
    np.testing.assert_allclose(load_audio((channels_first, 16000)), load_audio((tone, 16000)), atol=1e-6)
    already = _tone(200, 0.1, 24000)
    np.testing.assert_array_equal(load_audio(already), already)


def test_bad_input_is_named(tmp_path):
    fake = tmp_path / "voice.m4a"
    fake.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 200)
    with pytest.raises(AudioError, match="voice.m4a.*can't read"):
        load_audio(fake)
    with pytest.raises(AudioError, match="missing.wav.*no such audio file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="sample rate"):
        load_audio((np.zeros(10, np.float32), 0))
    with pytest.raises(AudioError, match="shape"):
        load_audio(np.zeros((2, 3, 4), np.float32))


def test_write_and_read_back(tmp_path):
    tone = _tone(440, 0.2, 24000)
    for fmt in ("wav", "flac"):
        path = write_audio(tmp_path / f"out.{fmt}", tone)
        info = sf.info(path)
        assert info.format == fmt.upper() and info.samplerate == 24000 and info.channels == 1
        np.testing.assert_allclose(load_audio(path), tone, atol=1e-4)
    path = write_audio(tmp_path / "take", tone[None], format="flac")  # [1, T] and an explicit format
    assert sf.info(path).format == "FLAC"
    with pytest.raises(AudioError, match="out.mp3.*'mp3'.*wav, flac"):
        write_audio(tmp_path / "out.mp3", tone)
    with pytest.raises(AudioError, match="mono"):
        write_audio(tmp_path / "two.wav", np.zeros((2, 100), np.float32))


def test_stats():
    stats = audio_stats(_tone(440, 2.0, 24000, amplitude=0.5))
    assert stats["duration_s"] == 2.0
    assert abs(stats["peak_dbfs"] - 20 * np.log10(0.5)) < 0.01
    assert abs(stats["rms_dbfs"] - 20 * np.log10(0.5 / np.sqrt(2))) < 0.01
    assert stats["clipped_fraction"] == 0 and not stats["is_silent"]
    loud = audio_stats(np.clip(_tone(440, 1.0, 24000, amplitude=2.0), -1, 1))
    assert 0.3 < loud["clipped_fraction"] < 0.9
    quiet = audio_stats(_tone(440, 1.0, 24000, amplitude=1e-4))
    assert quiet["is_silent"] and quiet["rms_dbfs"] < -80
    zero = audio_stats(np.zeros(100, np.float32))
    assert zero["is_silent"] and zero["peak_dbfs"] == zero["rms_dbfs"] == -120.0
    assert audio_stats(np.zeros(0, np.float32))["duration_s"] == 0.0


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.25, 2.0])
def test_time_stretch_keeps_pitch(rate):
    sr = 24000
    # A voiced-speech-like signal: 180 Hz with harmonics.
    t = np.arange(sr) / sr
    audio = sum(np.sin(2 * np.pi * 180 * h * t) / h for h in (1, 2, 3)).astype(np.float32) * 0.3
    out = time_stretch(audio, rate, sr)
    assert len(out) == round(sr / rate)
    assert abs(_dominant_hz(out, sr) - 180) < 3
    # The waveform stays clean: energy matches and little appears between the harmonics.
    assert abs(np.sqrt(np.mean(out**2)) - np.sqrt(np.mean(audio**2))) < 0.02
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / sr)
    harmonic = np.min(np.abs(freqs[:, None] - 180 * np.arange(1, 4)), axis=1) < 15
    assert spectrum[~harmonic].sum() < 0.1 * spectrum[harmonic].sum()


def test_time_stretch_edges():
    audio = _tone(200, 0.5, 24000)
    np.testing.assert_array_equal(time_stretch(audio, 1.0), audio)
    assert len(time_stretch(audio[:100], 2.0)) == 50  # shorter than one frame
    with pytest.raises(AudioError, match="between"):
        time_stretch(audio, 0)
    with pytest.raises(AudioError, match="mono"):
        time_stretch(np.zeros((2, 100), np.float32), 1.5)


def _wav_header_file(path, sample_rate, data_bytes=2000, channels=1, bits=16):
    """A PCM WAV written field by field, so that its header can declare any sample rate (a u32)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block % 2**32, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body + bytes(data_bytes))
    return path


def _flac_declaring(path, sample_rate, channels, total_frames):
    """A real one-second FLAC whose STREAMINFO then declares `total_frames` (libsndfile reports it as is)."""
    sf.write(path, np.zeros((sample_rate, channels), np.float32), sample_rate)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    fields = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels - 1 (3), bits - 1 (5), frames (36)
    data[18:26] = ((fields >> 36 << 36) | total_frames).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _peak_allocation(call) -> tuple:
    """(peak bytes of numpy's and Python's allocations, the message) while `call()` raises its AudioError."""
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as error:
            call()
        return tracemalloc.get_traced_memory()[1], str(error.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("sample_rate", [50_000_000, 2**31 - 1, 4000])
def test_a_tiny_wav_declaring_an_absurd_rate_is_refused_from_its_header(tmp_path, sample_rate):
    path = _wav_header_file(tmp_path / "probe.wav", sample_rate)
    assert path.stat().st_size < 2100 and sf.info(path).samplerate == sample_rate
    peak, message = _peak_allocation(lambda: load_audio(path))
    assert f"probe.wav: sample rate {sample_rate} Hz; audio inputs must be between 8000 and 192000 Hz" in message
    assert peak < 1 << 20  # resampling 50 MHz to 24 kHz used to ask for 7.45 GiB


def test_length_and_decoded_size_come_from_the_header(tmp_path):
    hours = _flac_declaring(tmp_path / "hours.flac", 8000, 1, 8000 * 36000)
    assert sf.info(hours).duration == 36000 and hours.stat().st_size < 1000
    peak, message = _peak_allocation(lambda: load_audio(hours))
    assert "hours.flac: 36000 s long; audio inputs are at most 300 s" in message and peak < 1 << 20
    wide = _flac_declaring(tmp_path / "wide.flac", 48000, 8, 48000 * 100)
    peak, message = _peak_allocation(lambda: load_audio(wide))
    assert "wide.flac: 8 channels x 4800000 frames decode to 146 MB; at most 128 MB" in message and peak < 1 << 20
    # Within the bounds the same kind of file reads as before.
    ok = _flac_declaring(tmp_path / "ok.flac", 48000, 2, 48000)
    assert load_audio(ok).shape == (24000,)


def test_arrays_get_the_same_bounds():
    with pytest.raises(AudioError, match="sample rate 50000000 Hz"):
        load_audio((np.zeros(1000, np.float32), 50_000_000))
    with pytest.raises(AudioError, match="audio array: 301 s long"):
        load_audio((8000, np.zeros(8000 * 301, np.int16)))
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        load_audio((np.zeros(10, np.float32), 16000.5))


def test_check_take_refuses_what_cannot_be_speech():
    speech = _tone(180, 0.5, 24000, amplitude=0.05)  # about -29 dBFS, like Kokoro's quietest takes
    assert check_take(speech, "Kokoro m with voice 'v'", "a") is not None
    broken = speech.copy()
    broken[100:110] = np.nan
    message = r"Kokoro m with voice 'v' made NaN or infinite samples \(10 of 12000\) for 'a'"
    with pytest.raises(TakeError, match=message):
        check_take(broken, "Kokoro m with voice 'v'", "a")
    with pytest.raises(TakeError, match=r"made 0.50 s of silence \(RMS -120 dBFS\) for 'x{57}\.\.\.'"):
        check_take(np.zeros(12000, np.float32), "CSM m", "x" * 100)
    with pytest.raises(TakeError, match="RMS -7[0-9] dBFS"):
        check_take(_tone(180, 0.5, 24000, amplitude=2e-4), "CSM m", "hello")
    with pytest.raises(TakeError, match="0.00 s of silence"):
        check_take(np.zeros(0, np.float32), "CSM m", "hello")
    assert check_take(np.zeros(1920, np.float32), "CSM m", "hello", partial=True).size == 1920  # a pause
    with pytest.raises(TakeError, match="NaN"):
        check_take(np.full(1920, np.inf, np.float32), "CSM m", "hello", partial=True)
