"""encode_audio and AudioStreamEncoder: every format decodes back (PyAV or soundfile) to the same length and
pitch; streamed pieces make one valid file."""

import io

import numpy as np
import pytest
import soundfile as sf

from mlx_tts.audio import ENCODINGS, AudioError, AudioStreamEncoder, encode_audio

RATE = 24000
TONE_HZ = 440.0


def tone(seconds=1.5):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def decode(data: bytes, fmt: str):
    """(samples, rate) of encoded bytes, through an independent reader for each format."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, RATE
    if fmt == "wav":
        return sf.read(io.BytesIO(data), dtype="float32")
    import av

    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768, rate
    return audio.astype(np.float32), rate


def dominant_hz(audio, rate):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * rate / len(audio)


@pytest.mark.parametrize("fmt", list(ENCODINGS))
def test_every_format_decodes_back_to_the_tone(fmt):
    audio = tone()
    decoded, rate = decode(encode_audio(audio, RATE, fmt), fmt)
    # lossy codecs add up to ~0.1 s of encoder delay and padding
    assert abs(len(decoded) / rate - len(audio) / RATE) < 0.1
    assert abs(dominant_hz(decoded, rate) - TONE_HZ) < 5
    if fmt in ("wav", "flac", "pcm"):
        np.testing.assert_allclose(decoded, audio, atol=1e-4)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "wav", "flac", "pcm"])
def test_streamed_pieces_make_one_file_and_bytes_come_before_the_end(fmt):
    audio = tone(3.0)
    encoder = AudioStreamEncoder(fmt, RATE)
    pieces = [encoder.write(audio[i:i + RATE // 2]) for i in range(0, len(audio), RATE // 2)]
    assert sum(map(len, pieces[:-1])) > 0, "nothing was ready before the last piece"
    data = b"".join(pieces) + encoder.close()
    decoded, rate = decode(data, fmt)
    assert abs(len(decoded) / rate - 3.0) < 0.1
    assert abs(dominant_hz(decoded, rate) - TONE_HZ) < 5


def test_unknown_format_and_bad_audio_are_named():
    with pytest.raises(AudioError, match="'ogg'.*mp3, opus, aac, flac, wav, pcm"):
        encode_audio(tone(), RATE, "ogg")
    with pytest.raises(AudioError, match="mono"):
        encode_audio(np.zeros((2, 2, 2), np.float32), RATE, "wav")
