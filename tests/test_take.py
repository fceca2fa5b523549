"""mlx_tts.take: the one measured, streaming take, on the tiny random Kokoro."""

import threading

import numpy as np
import pytest

from mlx_tts.models.kokoro import KokoroPipeline
from mlx_tts.take import kokoro_takes, last

SPEED = 4  # random duration heads give ~25 frames per token; keep the audio short


class CountingLock:
    """A lock that records whether it is held, and how often it was taken."""

    def __init__(self):
        self._lock, self.taken, self.held = threading.Lock(), 0, False

    def __enter__(self):
        self._lock.acquire()
        self.taken, self.held = self.taken + 1, True

    def __exit__(self, *exc):
        self.held = False
        self._lock.release()


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return KokoroPipeline(lang_code="a", model=tiny_model)


def test_a_take_is_yielded_after_every_chunk_with_its_rows_words_and_figures(pipeline):
    lock, seen = CountingLock(), []
    for take in kokoro_takes(pipeline, "One thing.\nAnother thing.", "af_test", SPEED, seed=3, lock=lock):
        assert not lock.held  # the caller runs between chunks with the lock free
        seen.append(len(take.pieces))
    assert seen == [1, 2] and lock.taken == 3  # one per chunk, and one that finds no more
    assert [g for g, _, _ in take.chunks] == ["One thing.", "Another thing."]
    assert [s for _, _, s in take.chunks] == [len(p) / 24000 for p in take.pieces]
    assert take.seconds == pytest.approx(len(take.audio) / 24000) and take.audio.dtype == np.float32
    assert [w.word for w in take.words] == ["One", "thing.", "Another", "thing."]
    assert take.words[2].start_s >= take.chunks[0][2]  # the second chunk's words start after the first chunk
    assert int(take.durations.sum()) * pipeline.model.frame_size == len(take.audio)
    assert take.elapsed_s > 0 and take.peak_mlx_mb > 0 and take.real_time_factor > 0


def test_the_seed_makes_the_take(pipeline):
    takes = [last(kokoro_takes(pipeline, "Hi there.", "af_test", SPEED, seed=seed, words=False)).audio
             for seed in (5, 5, 6)]
    assert np.array_equal(takes[0], takes[1]) and not np.array_equal(takes[0], takes[2])


def test_bad_input_fails_before_the_lock_is_taken(pipeline):
    lock = CountingLock()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        next(kokoro_takes(pipeline, "Hello.", "af_test", SPEED, "(unclosed", lock=lock))
    with pytest.raises(ValueError, match="doesn't know: 7"):
        next(kokoro_takes(pipeline, None, "af_test", SPEED, lock=lock, phonemes="kˈʊk\nhˈi7"))
    assert lock.taken == 0


def test_edited_phonemes_are_one_chunk_per_line_and_meet_no_lexicon(pipeline):
    take = last(kokoro_takes(pipeline.with_lexicon({"kook": "hˈi"}), "kook", "af_test", SPEED,
                             phonemes="kˈʊk\nhˈi"))
    assert [p for _, p, _ in take.chunks] == ["kˈʊk", "hˈi"] and take.replaced == []
