"""Audio in and out for the engine: numpy in, numpy out, float32 mono at 24 kHz unless said otherwise.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...), resampling through
scipy's polyphase filter. `time_stretch` is WSOLA (waveform-similarity overlap-add): it changes tempo
without changing pitch by overlap-adding windowed frames taken at a new pace from the input, each shifted
by up to WSOLA_TOLERANCE_S so that it lines up with the waveform it continues. For speech this keeps the
voice clean, without the "phasiness" a phase vocoder adds.
"""

import io
from math import ceil, gcd
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
from scipy.signal import correlate, resample_poly

from .errors import MlxTtsError

SAMPLE_RATE = 24000
WRITE_FORMATS = ("wav", "flac")
# Formats `encode_audio` and `AudioStreamEncoder` make (OpenAI's speech API list): soundfile writes the
# lossless ones, PyAV (ffmpeg's own libraries, inside its wheel: no system ffmpeg needed) the compressed ones.
# format -> (PyAV container, codec); "pcm" is raw 16-bit little-endian samples, no header.
ENCODINGS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
    "wav": ("wav", "pcm_s16le"),
    "pcm": (None, None),
}
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
SILENCE_DBFS = -60.0  # RMS below this counts as silence
DBFS_FLOOR = -120.0  # what digital silence reports, instead of -inf
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
WSOLA_FRAME_S = 0.03
WSOLA_TOLERANCE_S = 0.01
STRETCH_RANGE = (0.25, 4.0)
# Inputs are bounded before they are decoded or resampled: a header can declare any rate and length.
INPUT_RATE_RANGE = (8000, 192000)  # Hz
MAX_INPUT_S = 300.0
MAX_DECODED_BYTES = 128 << 20  # float32 samples of all channels: 5 min of 48 kHz stereo fits


class AudioError(MlxTtsError, ValueError):
    pass


class TakeError(MlxTtsError, RuntimeError):
    """A generated take that can't be speech (NaN or infinite samples, or silence) where speech was asked."""


def _to_float(array: np.ndarray, source) -> np.ndarray:
    """Samples as float32 in [-1, 1]: integer PCM is scaled by its full range."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.signedinteger):
        array = (array / float(2 ** (8 * array.itemsize - 1))).astype(np.float32)
    elif np.issubdtype(array.dtype, np.unsignedinteger):  # 8-bit WAV style: 128 is zero
        half = float(2 ** (8 * array.itemsize - 1))
        array = ((array - half) / half).astype(np.float32)
    else:
        raise AudioError(f"{source}: audio must hold numbers, got {array.dtype}")
    if not np.isfinite(array).all():
        raise AudioError(f"{source}: audio holds NaN or infinite values")
    return array


def _to_mono(array: np.ndarray, source) -> np.ndarray:
    """1-D as is; 2-D is [frames, channels] or [channels, frames] (the shorter axis is the channels)."""
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        channel_axis = 1 if array.shape[1] <= array.shape[0] else 0
        return array.mean(axis=channel_axis, dtype=np.float32)
    raise AudioError(f"{source}: audio must be 1-D or 2-D (frames x channels), got shape {list(array.shape)}")


def _check_input(sr, frames: int, channels: int, name):
    """Refuse a rate or a length outside the bounds, from what a header or an array declares."""
    low, high = INPUT_RATE_RANGE
    if not np.isscalar(sr) or int(sr) != sr or sr <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer, got {sr!r}")
    if not low <= sr <= high:
        raise AudioError(f"{name}: sample rate {int(sr)} Hz; audio inputs must be between {low} and {high} Hz")
    if frames / sr > MAX_INPUT_S:
        raise AudioError(
            f"{name}: {frames / sr:.0f} s long; audio inputs are at most {MAX_INPUT_S:.0f} s: trim the clip first"
        )
    if frames * channels * 4 > MAX_DECODED_BYTES:
        raise AudioError(
            f"{name}: {channels} channels x {frames} frames decode to {frames * channels * 4 >> 20} MB; at most "
            f"{MAX_DECODED_BYTES >> 20} MB: trim the clip or mix it down first"
        )


def _read_file(path: Path):
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
        _check_input(info.samplerate, info.frames, info.channels, path)
        audio, sr = sf.read(str(path), frames=info.frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, TypeError, ValueError, RuntimeError) as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError(
            f"{path}: can't read this audio ({e}). Readable formats include WAV, FLAC, OGG, MP3 and AIFF; "
            "convert other formats (M4A/AAC, WebM, ...) to one of these first"
        ) from None
    return audio, sr


def load_audio(source, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 mono at `sample_rate` from a file path, an `(array, sr)` tuple (Gradio's `(sr, array)` too)
    or an array already at `sample_rate`. Integer PCM arrays are scaled to [-1, 1]. Rates outside
    INPUT_RATE_RANGE and inputs over MAX_INPUT_S or MAX_DECODED_BYTES are refused, files by their header."""
    if isinstance(source, (str, Path)):
        audio, sr = _read_file(Path(source))
        name = source
    elif isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(f"an audio tuple must be (array, sample_rate), got {len(source)} items")
        first, second = source
        audio, sr = (second, first) if np.isscalar(first) else (first, second)
        name = "audio array"
        audio = np.asarray(audio)
        _check_input(sr, max(audio.shape, default=0), min(audio.shape, default=1) if audio.ndim == 2 else 1, name)
    else:
        audio, sr = source, sample_rate
        name = "audio array"
    audio = _to_mono(_to_float(audio, name), name)
    return resample(audio, int(sr), sample_rate)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling along the first axis; the output has ceil(len * target_sr / orig_sr) samples."""
    for name, sr in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if int(sr) != sr or sr <= 0:
            raise AudioError(f"{name} must be a positive integer, got {sr!r}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr or len(audio) == 0:
        return audio
    common = gcd(int(orig_sr), int(target_sr))
    return resample_poly(audio, int(target_sr) // common, int(orig_sr) // common, axis=0).astype(np.float32)


def write_audio(path, audio, sample_rate: int = SAMPLE_RATE, format: str = None) -> Path:
    """Write mono audio as 16-bit WAV or FLAC; the format comes from `format` or the file's suffix."""
    path = Path(path)
    format = (format or path.suffix.lstrip(".")).lower()
    if format not in WRITE_FORMATS:
        raise AudioError(f"{path}: can't write format {format!r}; supported: {', '.join(WRITE_FORMATS)}")
    audio = _to_float(np.asarray(audio), path)
    if audio.ndim != 1:
        audio = audio.squeeze()
        if audio.ndim != 1:
            raise AudioError(f"{path}: expected mono audio, got shape {list(np.shape(audio))}")
    try:
        sf.write(str(path), np.clip(audio, -1.0, 1.0), int(sample_rate), format=format.upper(), subtype="PCM_16")
    except sf.SoundFileError as e:
        raise AudioError(f"{path}: can't write audio ({e})") from None
    return path


def _dbfs(level: float) -> float:
    return max(20.0 * float(np.log10(level)), DBFS_FLOOR) if level > 0 else DBFS_FLOOR


def audio_stats(audio, sample_rate: int = SAMPLE_RATE) -> dict:
    """Duration, peak and RMS level (dBFS, floored at DBFS_FLOOR), share of clipped samples, silence."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return dict(duration_s=0.0, peak_dbfs=DBFS_FLOOR, rms_dbfs=DBFS_FLOOR, clipped_fraction=0.0, is_silent=True)
    magnitude = np.abs(audio)
    rms_dbfs = _dbfs(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))))
    return dict(
        duration_s=audio.size / sample_rate,
        peak_dbfs=_dbfs(float(magnitude.max())),
        rms_dbfs=rms_dbfs,
        clipped_fraction=float(np.mean(magnitude >= CLIP_LEVEL)),
        is_silent=rms_dbfs < SILENCE_DBFS,
    )


def check_take(audio, maker: str, text: str, sample_rate: int = SAMPLE_RATE, partial: bool = False) -> np.ndarray:
    """`audio` (float32) when it can be the speech of `text`, else a TakeError that names `maker`, the model and
    voice that made it: a damaged checkpoint or voice file makes NaNs or silence, not an error of its own.
    `partial`: a chunk of a take still being made, checked for NaNs only (pauses are silent)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    said = text if len(text) <= 60 else text[:57] + "..."
    advice = "its weights or the voice are damaged; re-download or re-convert the model, or try another voice"
    if not np.isfinite(audio).all():
        bad = int(np.count_nonzero(~np.isfinite(audio)))
        raise TakeError(f"{maker} made NaN or infinite samples ({bad} of {audio.size}) for {said!r}: {advice}")
    stats = audio_stats(audio, sample_rate)
    if stats["is_silent"] and not partial:
        raise TakeError(
            f"{maker} made {stats['duration_s']:.2f} s of silence (RMS {stats['rms_dbfs']:.0f} dBFS) for {said!r}: "
            f"{advice}"
        )
    return audio


def silence_ends(audio, sample_rate: int = SAMPLE_RATE, floor_db: float = -40.0) -> tuple:
    """Seconds of silence (every sample below `floor_db` relative to the peak) at the start and at the end."""
    magnitude = np.abs(np.asarray(audio, dtype=np.float32).reshape(-1))
    loud = np.flatnonzero(magnitude > magnitude.max(initial=0.0) * 10 ** (floor_db / 20))
    if loud.size == 0:
        return len(magnitude) / sample_rate, 0.0
    return loud[0] / sample_rate, (len(magnitude) - 1 - loud[-1]) / sample_rate


def time_stretch(audio, rate: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Change tempo, keep pitch (WSOLA). rate > 1 is faster: the output has round(len / rate) samples."""
    low, high = STRETCH_RANGE
    if not (np.isfinite(rate) and low <= rate <= high):
        raise AudioError(f"stretch rate must be between {low} and {high}, got {rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise AudioError(f"time_stretch takes mono audio, got shape {list(audio.shape)}")
    out_len = round(len(audio) / rate)
    if rate == 1 or out_len == 0:
        return audio[:out_len].copy()

    frame = 2 * round(WSOLA_FRAME_S * sample_rate / 2)
    hop = frame // 2  # output hop; a periodic Hann window at 50% overlap sums to one
    tolerance = round(WSOLA_TOLERANCE_S * sample_rate)
    window = np.hanning(frame + 1)[:-1].astype(np.float32)
    n_frames = ceil(out_len / hop) + 1

    # Zero padding so that every frame, search region and continuation lies inside the signal.
    lead = tolerance + frame // 2
    end = ceil((n_frames - 1) * hop * rate) + lead + tolerance + frame + hop
    padded = np.pad(audio, (lead, max(end - len(audio) - lead, 0)))

    out = np.zeros(n_frames * hop + frame, np.float32)
    weight = np.zeros_like(out)
    start = tolerance  # frame 0 is centred on input sample 0
    for k in range(n_frames):
        ideal = tolerance + round(k * hop * rate)
        if k > 0:
            # Pick the frame near `ideal` that best continues the waveform after the previous frame.
            continuation = padded[start + hop : start + hop + frame]
            region = padded[ideal - tolerance : ideal + tolerance + frame]
            start = ideal - tolerance + int(np.argmax(correlate(region, continuation, mode="valid")))
        out[k * hop : k * hop + frame] += window * padded[start : start + frame]
        weight[k * hop : k * hop + frame] += window
    out, weight = out[frame // 2 : frame // 2 + out_len], weight[frame // 2 : frame // 2 + out_len]
    return out / np.maximum(weight, 1e-3)


def _mono_float(samples) -> np.ndarray:
    audio = _to_float(np.asarray(samples), "audio array").squeeze()
    if audio.ndim > 1:
        raise AudioError(f"expected mono audio, got shape {list(np.shape(samples))}")
    return np.clip(audio.reshape(-1), -1.0, 1.0)


def _check_encoding(fmt: str) -> str:
    fmt = (fmt or "").lower()
    if fmt not in ENCODINGS:
        raise AudioError(f"can't encode audio as {fmt!r}; supported: {', '.join(ENCODINGS)}")
    return fmt


def encode_audio(samples, rate: int = SAMPLE_RATE, fmt: str = "wav", bit_rate: Optional[int] = None) -> bytes:
    """Mono audio as the bytes of a file in `fmt` (one of ENCODINGS): 16-bit wav/flac/pcm by soundfile,
    mp3/opus/aac by PyAV (at `bit_rate` bits per second, or the codec's default)."""
    fmt = _check_encoding(fmt)
    audio = _mono_float(samples)
    if fmt == "pcm":
        return (audio * 32767).round().astype("<i2").tobytes()
    if fmt in WRITE_FORMATS:
        buffer = io.BytesIO()
        sf.write(buffer, audio, int(rate), format=fmt.upper(), subtype="PCM_16")
        return buffer.getvalue()
    buffer = io.BytesIO()
    encoder = AudioStreamEncoder(fmt, rate, bit_rate, file=buffer)
    encoder.write(audio)
    encoder.close()
    return buffer.getvalue()


class _Sink:
    """A write-only file for PyAV: without `seek`, muxers write a streamable file (no header rewritten at the
    end), so each byte can be sent as soon as it is written."""

    def __init__(self):
        self._parts = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class AudioStreamEncoder:
    """Encode audio piece by piece: `write(samples)` and `close()` return the bytes ready so far, which
    together make one file in `fmt` (wav and flac without a known length, as streamed files are).

    With a `file` (a path or a seekable binary file object), the file is written there instead: seekable, so
    the muxer also writes the headers that need the whole take (mp3's encoder delay and padding, which
    decoders use to give back the exact length), and `write`/`close` return nothing."""

    def __init__(self, fmt: str, rate: int = SAMPLE_RATE, bit_rate: Optional[int] = None, file=None):
        import av  # imported on first use: the engine itself never needs it

        self.fmt = _check_encoding(fmt)
        self.rate = int(rate)
        container, codec = ENCODINGS[self.fmt]
        if file is not None and container is None:
            raise AudioError("raw pcm has no file container; write it with encode_audio")
        if isinstance(file, Path):
            file = str(file)
        self._sink = _Sink()
        self._container = None
        if container:
            self._container = av.open(self._sink if file is None else file, mode="w", format=container)
            self._stream = self._container.add_stream(codec, rate=self.rate, layout="mono")
            if bit_rate:
                self._stream.bit_rate = int(bit_rate)
        self._frame = av.AudioFrame

    def write(self, samples) -> bytes:
        audio = _mono_float(samples)
        if self._container is None:
            return (audio * 32767).round().astype("<i2").tobytes()
        if audio.size:
            frame = self._frame.from_ndarray(audio[None], format="flt", layout="mono")
            frame.sample_rate = self.rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder and write the container's trailer."""
        if self._container is None:
            return b""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()
