"""Objective comparison of two takes: a candidate model (e.g. quantized) against its reference (full precision)
on the same text, voice and seed.

Measures: log-mel spectral distance (mean absolute dB, frame by frame and after time alignment), per-token
duration agreement (Kokoro), waveform and spectral (STFT magnitude) SNR against the reference, size on disk and
in memory, peak memory and real-time factor of each take.
"""

from pathlib import Path
from typing import Optional

import numpy as np
from mlx.utils import tree_flatten

from . import audio as audio_io
from .take import Take, csm_takes, kokoro_takes, last

SAMPLE_RATE = audio_io.SAMPLE_RATE


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE, fmax: Optional[float] = None):
    """Triangular filters on the HTK mel scale, [n_mels, n_fft // 2 + 1]."""
    to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(0.0, to_mel(fmax or sample_rate / 2), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (center - lower)
    falling = (upper - bins) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def magnitude_spectrogram(audio, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """|STFT| with a periodic Hann window, centered frames, [frames, n_fft // 2 + 1]."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    audio = np.pad(audio, (n_fft // 2, n_fft // 2))
    n_frames = 1 + max(0, len(audio) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop][:n_frames]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    return np.abs(np.fft.rfft(frames * window, axis=-1))


def log_mel(audio, n_fft: int = 1024, hop: int = 256, n_mels: int = 80, floor_db: float = -100.0) -> np.ndarray:
    """Log-mel power spectrogram in dB, [frames, n_mels]."""
    mel = magnitude_spectrogram(audio, n_fft, hop) ** 2 @ mel_filterbank(n_fft, n_mels).T
    return np.maximum(10.0 * np.log10(np.maximum(mel, 1e-12)), floor_db)


def _floored_log_mels(reference, candidate, dynamic_range_db: float):
    """Both log-mel spectra, floored at `dynamic_range_db` below the reference's peak so that silence doesn't
    dominate the distances."""
    a, b = log_mel(reference), log_mel(candidate)
    floor = a.max() - dynamic_range_db
    return np.maximum(a, floor), np.maximum(b, floor)


def log_mel_distance(reference, candidate, dynamic_range_db: float = 80.0) -> float:
    """Mean absolute difference of log-mel spectra in dB, frame by frame over the common length."""
    a, b = _floored_log_mels(reference, candidate, dynamic_range_db)
    n = min(len(a), len(b))
    return float(np.mean(np.abs(a[:n] - b[:n])))


def aligned_log_mel_distance(reference, candidate, dynamic_range_db: float = 80.0) -> float:
    """Like `log_mel_distance`, over the frame pairs of the best time alignment (dynamic time warping). One
    token's changed duration shifts all the audio after it, which the frame-by-frame distance counts as
    spectral error; this one measures how the sounds differ, the duration agreement how their timing does."""
    from scipy.spatial.distance import cdist

    a, b = _floored_log_mels(reference, candidate, dynamic_range_db)
    total, pairs = warping_path_cost(cdist(a, b, "cityblock") / a.shape[1])  # mean |dB| of each frame pair
    return total / pairs


def warping_path_cost(cost: np.ndarray):
    """Dynamic time warping over a [N, M] cost matrix (steps right, down, diagonal; from (0, 0) to the last
    pair): the cheapest path's total cost and its number of pairs."""
    total = np.empty_like(cost)  # cheapest path from (0, 0) to each pair
    total[0] = np.cumsum(cost[0])
    for i in range(1, len(cost)):
        # in from the row above (straight or diagonal), then along the row: total[i, j] =
        # min over k <= j of (entry[k] + cost[i, k+1..j]), a running minimum on cumulative sums
        entry = cost[i] + np.minimum(total[i - 1], np.concatenate([[np.inf], total[i - 1, :-1]]))
        along = np.cumsum(cost[i])
        total[i] = along + np.minimum.accumulate(entry - along)
    i, j, pairs = len(cost) - 1, cost.shape[1] - 1, 1
    while i or j:  # walk the cheapest path back
        moves = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min((m for m in moves if min(m) >= 0), key=lambda m: total[m])
        pairs += 1
    return float(total[-1, -1]), pairs


def snr_db(reference, candidate) -> float:
    """Waveform signal-to-noise ratio of `candidate` against `reference` over the common length."""
    reference, candidate = np.asarray(reference).reshape(-1), np.asarray(candidate).reshape(-1)
    n = min(len(reference), len(candidate))
    noise = np.sum((reference[:n] - candidate[:n]) ** 2)
    return float(10 * np.log10(np.sum(reference[:n] ** 2) / max(noise, 1e-20)))


def spectral_snr_db(reference, candidate) -> float:
    """SNR of the candidate's STFT magnitudes against the reference's, over the common frames. Unlike the
    waveform SNR it ignores phase: Kokoro's harmonic source integrates F0 over the whole utterance, so a tiny
    F0 change drifts the waveform's phase and drives the waveform SNR to about 0 dB even when the takes
    sound the same."""
    # Flattened, the common frames are the common prefix: both spectrograms have the same number of bins.
    return snr_db(magnitude_spectrogram(reference), magnitude_spectrogram(candidate))


def duration_agreement(reference, candidate) -> dict:
    """Per-token durations: fraction of tokens with identical frame counts, and total frames each."""
    reference, candidate = np.asarray(reference).reshape(-1), np.asarray(candidate).reshape(-1)
    same = float(np.mean(reference == candidate)) if len(reference) == len(candidate) else 0.0
    return {"tokens_equal": same, "frames_reference": int(reference.sum()), "frames_candidate": int(candidate.sum())}


def folder_size_mb(path) -> float:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def parameter_memory_mb(model) -> float:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters())) / 2**20


def kokoro_take(model, text: str, voice: str, seed: int = 0, lang_code: str = "a", speed: float = 1.0) -> Take:
    from .models.kokoro import KokoroPipeline

    pipeline = KokoroPipeline(lang_code=lang_code, model=model)
    _ = pipeline.g2p  # built before timing
    return last(kokoro_takes(pipeline, text, voice, speed, seed=seed, words=False))


def csm_take(model, text: str, seed: int = 0, **stream_kwargs) -> Take:
    from .models.csm import CSMPipeline

    return last(csm_takes(CSMPipeline(model=model), text, seed=seed, **stream_kwargs))


def take(model, text: str, seed: int = 0, **kwargs) -> Take:
    return (csm_take if model.model_type == "csm" else kokoro_take)(model, text, seed=seed, **kwargs)


def compare_takes(reference: Take, candidate: Take) -> dict:
    report = {
        "log_mel_distance_db": log_mel_distance(reference.audio, candidate.audio),
        "aligned_log_mel_distance_db": aligned_log_mel_distance(reference.audio, candidate.audio),
        "snr_db": snr_db(reference.audio, candidate.audio),
        "spectral_snr_db": spectral_snr_db(reference.audio, candidate.audio),
        "length_ratio": len(candidate.audio) / max(len(reference.audio), 1),
        "rtf_reference": reference.real_time_factor,
        "rtf_candidate": candidate.real_time_factor,
        "peak_memory_mb_reference": reference.peak_mlx_mb,
        "peak_memory_mb_candidate": candidate.peak_mlx_mb,
    }
    if reference.durations is not None and candidate.durations is not None:
        report["durations"] = duration_agreement(reference.durations, candidate.durations)
    return report


def compare(reference_model, candidate_model, text: str, seed: int = 0, candidate_dir=None, **take_kwargs) -> dict:
    """Synthesize `text` with both models (same voice/reference and seed) and measure the difference.
    `candidate_dir` is where the candidate is saved, if it is (a model quantized in memory has no folder of its
    own). The returned dict also holds both takes' audio under "audio" (for A/B listening)."""
    reference = take(reference_model, text, seed=seed, **take_kwargs)
    candidate = take(candidate_model, text, seed=seed, **take_kwargs)
    report = compare_takes(reference, candidate)
    report["memory_mb_reference"] = parameter_memory_mb(reference_model)
    report["memory_mb_candidate"] = parameter_memory_mb(candidate_model)
    report["disk_mb_reference"] = folder_size_mb(reference_model.path)
    if candidate_dir is not None:
        report["disk_mb_candidate"] = folder_size_mb(candidate_dir)
    report["audio"] = {"reference": reference.audio, "candidate": candidate.audio, "sample_rate": SAMPLE_RATE}
    return report
