"""mlx_tts.quality: the measures on known signals, and `compare` on two tiny Kokoro models."""

import numpy as np
import pytest

from mlx_tts import quality

SR = quality.SAMPLE_RATE


def voiced(seconds=2.0, seed=0):
    """A gliding tone in syllable-like bursts, with a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    tone = np.sin(2 * np.pi * 220 * t * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))) * ((t % 0.4) < 0.25)
    return (0.3 * tone + 0.003 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def naive_warping_total(cost):
    total = np.full((cost.shape[0] + 1, cost.shape[1] + 1), np.inf)
    total[0, 0] = 0
    for i in range(cost.shape[0]):
        for j in range(cost.shape[1]):
            total[i + 1, j + 1] = cost[i, j] + min(total[i, j], total[i, j + 1], total[i + 1, j])
    return total[-1, -1]


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (7, 9), (12, 5)])
def test_warping_path_cost_matches_the_textbook_recursion(shape):
    cost = np.random.default_rng(sum(shape)).random(shape)
    total, pairs = quality.warping_path_cost(cost)
    assert total == pytest.approx(naive_warping_total(cost), rel=1e-12)
    assert max(shape) <= pairs <= sum(shape) - 1


def test_identical_takes_measure_as_identical():
    x = voiced()
    assert quality.log_mel_distance(x, x) == 0 and quality.aligned_log_mel_distance(x, x) == 0
    assert quality.snr_db(x, x) > 100 and quality.spectral_snr_db(x, x) > 100


def test_a_shift_costs_frame_distance_but_little_aligned_distance():
    x = voiced()
    cut = SR // 2
    shifted = np.concatenate([x[:cut], np.zeros(1024, np.float32), x[cut:]])  # a 43 ms pause: a longer token
    frame, aligned = quality.log_mel_distance(x, shifted), quality.aligned_log_mel_distance(x, shifted)
    assert frame > 3 * aligned and aligned < 1.5
    assert quality.snr_db(x, shifted) < 3  # out of phase after the cut


def test_distances_grow_with_the_damage():
    x = voiced()
    rng = np.random.default_rng(1)
    takes = [x + level * rng.standard_normal(x.size).astype(np.float32) for level in (0.001, 0.01, 0.1)]
    for measure in (quality.log_mel_distance, quality.aligned_log_mel_distance):
        d = [measure(x, t) for t in takes]
        assert d[0] < d[1] < d[2], measure.__name__
    snr = [quality.spectral_snr_db(x, t) for t in takes]
    assert snr[0] > snr[1] > snr[2]
    assert quality.snr_db(x, takes[1]) == pytest.approx(10 * np.log10(np.mean(x**2) / 0.01**2), abs=0.5)


def test_duration_agreement():
    assert quality.duration_agreement([3, 4, 5], [3, 4, 5]) == {
        "tokens_equal": 1.0, "frames_reference": 12, "frames_candidate": 12}
    assert quality.duration_agreement([3, 4, 5], [3, 5, 5])["tokens_equal"] == pytest.approx(2 / 3)
    assert quality.duration_agreement([3, 4, 5], [3, 4])["tokens_equal"] == 0.0


def test_compare_reports_everything_for_two_kokoro_models(tiny_model, tmp_path):
    from mlx_tts.models import kokoro
    from mlx_tts.quantize import quantize_model
    from mlx_tts.utils import load_model, save_model

    candidate = load_model(tiny_model.path)
    assert isinstance(candidate, kokoro.Model)
    weights, config = quantize_model(candidate, candidate.config, group_size=64, bits=8)
    folder = save_model(tmp_path / "q8", weights, config, source=candidate)
    report = quality.compare(tiny_model, candidate, "Hi.", seed=0, candidate_dir=folder, voice="af_test")
    for key in ("log_mel_distance_db", "aligned_log_mel_distance_db", "snr_db", "spectral_snr_db",
                "rtf_reference", "rtf_candidate", "peak_memory_mb_candidate"):
        assert np.isfinite(report[key]), key
    assert report["rtf_reference"] > 0 and report["durations"]["frames_reference"] > 0
    assert report["memory_mb_candidate"] < 0.35 * report["memory_mb_reference"]
    assert report["disk_mb_candidate"] < 0.35 * report["disk_mb_reference"]
    audio = report["audio"]
    assert audio["sample_rate"] == SR and len(audio["reference"]) > 0 and audio["candidate"].dtype == np.float32
    # the same seed gives the same take: a model compared with itself measures zero
    same = quality.compare(tiny_model, tiny_model, "Hi.", seed=0, voice="af_test")
    assert same["log_mel_distance_db"] == 0 and same["durations"]["tokens_equal"] == 1.0
