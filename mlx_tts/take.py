"""One measured, streaming take: a model's speech chunk by chunk, with what it cost.

Everything that speaks (the studio, its OpenAI API, `python -m mlx_tts.generate`, `mlx_tts.quality`, bench
scripts) makes its takes here, so a take is seeded, timed and measured the same way everywhere:
- the seed is set right before the first chunk, under the caller's lock (MLX's random state is process-wide);
- each chunk is made under the lock, so a stopped stream frees it once its chunk is done;
- only making the chunks is timed (not loading, nor word timings, nor what the caller does between chunks);
- peak MLX memory is reset before each chunk and the take keeps the largest peak.
"""

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import mlx.core as mx
import numpy as np

from .audio import SAMPLE_RATE


@dataclass
class Take:
    """A take so far (the generators yield it after every chunk) or finished."""

    settings: dict = field(default_factory=dict)  # what made it, for file names and stats
    pieces: list = field(default_factory=list)  # float32 audio per chunk, 24 kHz
    chunks: list = field(default_factory=list)  # [(graphemes, phonemes, seconds)] (Kokoro)
    words: list = field(default_factory=list)  # [captions.WordTiming] (Kokoro, when asked for)
    chunk_durations: list = field(default_factory=list)  # frames per token, one array per chunk (Kokoro)
    replaced: list = field(default_factory=list)  # words the pronunciation lexicon replaced
    elapsed_s: float = 0.0  # time spent making the chunks
    peak_mlx_mb: float = 0.0
    files: list = field(default_factory=list)  # what the caller wrote of it

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)

    @property
    def durations(self) -> Optional[np.ndarray]:
        """Frames per token over the whole take (Kokoro), else None."""
        return np.concatenate(self.chunk_durations) if self.chunk_durations else None

    @property
    def seconds(self) -> float:
        return sum(len(p) for p in self.pieces) / SAMPLE_RATE

    @property
    def real_time_factor(self) -> float:
        return self.elapsed_s / max(self.seconds, 1e-9)


def measured(items: Iterator, take: Take, audio_of: Callable, lock=None, seed: Optional[int] = None) -> Iterator:
    """(item, float32 audio) for each item of `items`, each made and turned into audio under `lock`, its time
    and peak MLX memory added to `take`; `seed`, when given, set right before the first under the same lock."""
    lock = lock if lock is not None else contextlib.nullcontext()
    first = True
    while True:
        with lock:
            if first and seed is not None:
                mx.random.seed(seed)
            first = False
            mx.reset_peak_memory()
            start = time.perf_counter()
            item = next(items, None)
            if item is None:
                return
            audio = np.asarray(audio_of(item), dtype=np.float32).reshape(-1)  # evaluates: part of the time
            take.elapsed_s += time.perf_counter() - start
            take.peak_mlx_mb = max(take.peak_mlx_mb, mx.get_peak_memory() / 2**20)
        yield item, audio


def kokoro_takes(pipeline, text: Optional[str], voice: str, speed: float = 1.0, split_pattern: Optional[str] = r"\n+",
                 seed: Optional[int] = 0, first_chunk_max: Optional[int] = None, lock=None, phonemes=None,
                 words: bool = True, settings: Optional[dict] = None) -> Iterator[Take]:
    """Speak `text` with a `KokoroPipeline` (or, with `phonemes`, those edited phonemes, one chunk per line);
    yield the take after each chunk. Bad input raises at the first step, before `lock` is taken (a slow split
    pattern holds up no one). `words`: word timings for captions; `seed=None` leaves MLX's seed as it is."""
    if phonemes is None:
        results = pipeline(text, voice, speed, split_pattern, first_chunk_max)
        take = Take(dict(settings or {}), replaced=pipeline.lexicon.matches(text))
    else:
        results = pipeline.from_phoneme_lines(phonemes, voice, speed, first_chunk_max)
        take = Take(dict(settings or {}))  # edited phonemes meet no lexicon
    for result, audio in measured(results, take, lambda result: result.audio[0], lock, seed):
        if words:
            take.words += pipeline.word_timings(result, take.seconds)
        if result.durations is not None:
            take.chunk_durations.append(np.asarray(result.durations))
        take.pieces.append(audio)
        take.chunks.append((result.graphemes, result.phonemes, len(audio) / SAMPLE_RATE))
        yield take


def csm_takes(pipeline, text: str, seed: Optional[int] = None, lock=None, settings: Optional[dict] = None,
              **stream_kwargs) -> Iterator[Take]:
    """Speak `text` with a `CSMPipeline`, yielding the take after each streamed chunk (320 ms by default).
    CSM samples from its own generator seeded with `seed`, so MLX's global seed is left alone. The keyword
    arguments are `CSMPipeline.stream`'s (ref_audio, ref_text, speaker, temperature, top_k, progress...)."""
    take = Take(dict(settings or {}))
    for _, audio in measured(pipeline.stream(text, seed=seed, **stream_kwargs), take, lambda chunk: chunk, lock):
        take.pieces.append(audio)
        yield take


def last(takes: Iterator[Take]) -> Take:
    """The finished take of a take generator (None if it made none)."""
    finished = deque(takes, maxlen=1)  # runs the generator to its end, keeping only the last take
    return finished[0] if finished else None
