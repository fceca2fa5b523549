"""Word timings from Kokoro's predicted durations, and captions (SRT, WebVTT) made of them.

Kokoro predicts how many frames each phoneme token lasts, so the time of every phoneme in the take is known.
A chunk's phonemes are words separated by spaces; each text word is matched to the phoneme words it was
spoken as (one, or several for "$5.50"), and gets the time from its first to its last sounding phoneme.
Text in scripts without spaces (Japanese, Chinese) is cut after its punctuation instead: a "word" there is a
clause.
"""

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

# Phoneme symbols that are not sounds: their frames are pauses, not part of a word.
SILENT_SYMBOLS = set(';:,.!?¡¿—…"«»“”()')
CUE_MAX_WORDS = 7
CUE_MAX_S = 4.0
CUE_BREAK_AFTER = tuple(".!?。！？…,;:，、")
WORD_BREAK = re.compile(r"\s+|(?<=[、。！？，；：])")


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float

    def as_dict(self) -> dict:
        return {"word": self.word, "start_time": round(self.start_s, 3), "end_time": round(self.end_s, 3)}


def phoneme_word_spans(phonemes: str, durations, vocab: dict, seconds_per_frame: float) -> list:
    """[(start_s, end_s)] of each space-separated phoneme word, from the frames per token (`durations`: one
    per symbol of `phonemes` that is in `vocab`, plus a pad at each end)."""
    durations = np.asarray(durations, dtype=np.int64).reshape(-1)
    symbols = [c for c in phonemes if c in vocab]
    if len(durations) != len(symbols) + 2:
        raise ValueError(f"{len(durations)} durations for {len(symbols)} phoneme tokens (+2 pads)")
    ends = np.cumsum(durations)[1:-1] * seconds_per_frame
    starts = ends - durations[1:-1] * seconds_per_frame
    spans, word = [], []
    for i, symbol in enumerate(symbols + [" "]):
        if symbol != " ":
            word.append(i)
            continue
        if word:
            sounding = [j for j in word if symbols[j] not in SILENT_SYMBOLS] or word
            spans.append((float(starts[sounding[0]]), float(ends[sounding[-1]])))
        word = []
    return spans


def align_words(graphemes: str, spans: list, phonemize: Callable[[str], str]) -> list:
    """[WordTiming] for each word of `graphemes` (split at whitespace and CJK punctuation), given the phoneme
    words' spans.

    Words and phoneme words pair one to one when their counts agree; otherwise each word is phonemized alone
    to learn how many phoneme words it became. If that still does not add up, the words share the speech
    time in proportion to their length."""
    words = [w for w in WORD_BREAK.split(graphemes) if w]
    if not words or not spans:
        return []
    if len(words) == len(spans):
        return [WordTiming(w, s, e) for w, (s, e) in zip(words, spans)]
    counts = [len(phonemize(w).split()) for w in words]
    if sum(counts) == len(spans):
        timings, i = [], 0
        for word, count in zip(words, counts):
            if count:
                timings.append(WordTiming(word, spans[i][0], spans[i + count - 1][1]))
            else:  # a word with no sound of its own (a lone dash): a point at the previous word's end
                at = timings[-1].end_s if timings else spans[0][0]
                timings.append(WordTiming(word, at, at))
            i += count
        return timings
    start, end = spans[0][0], spans[-1][1]
    edges = start + (end - start) * np.cumsum([0] + [len(w) for w in words]) / sum(len(w) for w in words)
    return [WordTiming(w, float(a), float(b)) for w, a, b in zip(words, edges[:-1], edges[1:])]


def cues(words: list, max_words=CUE_MAX_WORDS, max_s=CUE_MAX_S) -> list:
    """Group word timings into caption cues [(start_s, end_s, text)]: a cue ends after a punctuation mark,
    at `max_words` words or when it would pass `max_s` seconds."""
    out, current = [], []
    for timing in words:
        if current and (len(current) >= max_words or timing.end_s - current[0].start_s > max_s):
            out.append(current)
            current = []
        current.append(timing)
        if timing.word.endswith(CUE_BREAK_AFTER):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return [(c[0].start_s, c[-1].end_s, " ".join(t.word for t in c)) for c in out]


def _timestamp(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def to_srt(words: list) -> str:
    return cues_to_srt(cues(words))


def cues_to_srt(cue_list: list) -> str:
    """SRT of cues [(start_s, end_s, text)] made earlier (a long-form book joins its chapters' cues)."""
    return "".join(f"{i}\n{_timestamp(s, ',')} --> {_timestamp(e, ',')}\n{text}\n\n"
                   for i, (s, e, text) in enumerate(cue_list, 1))


def to_vtt(words: list) -> str:
    return "WEBVTT\n\n" + "".join(f"{_timestamp(s, '.')} --> {_timestamp(e, '.')}\n{text}\n\n"
                                  for s, e, text in cues(words))


def shift(words: list, offset_s: float) -> list:
    return [WordTiming(w.word, w.start_s + offset_s, w.end_s + offset_s) for w in words]

