"""KokoroPipeline: text -> phonemes -> audio, one result per chunk.

Text is split on `split_pattern`, then each part into sentences; sentences are packed into chunks that stay
under the model's phoneme limit. A sentence that alone passes the limit is cut at clause punctuation, then at
word boundaries, so no text is dropped.
"""

import copy
import logging
import re
from dataclasses import dataclass, replace
from typing import Iterator, Optional

import mlx.core as mx

# User split patterns run on the `regex` package, not `re`: the same syntax as `re` (lookbehinds included, which
# google-re2 lacks) plus a time limit, so a catastrophically backtracking pattern such as `(a+)+b` fails in
# SPLIT_TIMEOUT_S instead of running for hours; `concurrent=True` releases the GIL so other threads keep running.
import regex

from ...audio import check_take, silence_ends
from ...captions import align_words, phoneme_word_spans, shift
from ...errors import MlxTtsError
from ...g2p import LANG_CODES, WORD_GAP, get_g2p, script_mismatch, word_gaps
from ...lexicon import Lexicon, LexiconError
from .voices import VoiceBank, style_for_length

logger = logging.getLogger("mlx_tts")

SPEED_RANGE = (0.25, 4.0)
# A good `first_chunk_max` for streaming: ~16 phonemes are about a second of speech, made in ~0.7 s on a 2-core
# AVX2 CPU. Each later streamed chunk may be STREAM_GROWTH times longer than the one before: it is made while
# those play, which keeps up as long as a chunk takes under ~1 / STREAM_GROWTH of its length to make.
STREAM_FIRST_CHUNK = 16
STREAM_GROWTH = 1.5
# Kokoro opens every chunk with ~0.3 s of silence and ends it with ~0.6 s. Where a streamed chunk was cut inside a
# sentence, that would be a ~0.9 s pause mid-sentence: there the silence is trimmed to these margins.
JOIN_LEAD_S, JOIN_TRAIL_S = 0.05, 0.12
SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s+")
SENTENCE_FINAL = re.compile(r"[.!?。！？…]$")
CLAUSE_END = re.compile(r"(?<=[,;:—.!?])\s+|(?<=[，；：。！？])\s*")  # CJK punctuation needs no space
PUNCTUATION = set(';:,.!?¡¿—…"«»“”() ')
SPLIT_TIMEOUT_S = 1.0  # the most a split pattern may take on one text


class PipelineError(MlxTtsError, ValueError):
    """Bad input to the pipeline: empty text, a speed out of range, a split pattern that fails."""


def split_text(text: str, split_pattern: Optional[str], timeout_s: float = SPLIT_TIMEOUT_S) -> list:
    """`text` cut at `split_pattern` (None or "" keeps it whole), within `timeout_s` seconds."""
    if not split_pattern:
        return [text]
    try:
        pattern = regex.compile(split_pattern, regex.VERSION0)  # VERSION0: the behaviour of `re`
    except regex.error as e:
        raise PipelineError(f"The split pattern {split_pattern!r} is not a valid regular expression: {e}") from None
    try:
        return pattern.split(text, timeout=timeout_s, concurrent=True)
    except TimeoutError:
        raise PipelineError(
            f"The split pattern {split_pattern!r} took over {timeout_s:g} s on this text (it backtracks "
            "catastrophically, like `(a+)+b`); use a simpler pattern such as `\\n+`"
        ) from None


def _same(phonemes: str) -> str:
    return phonemes


@dataclass
class Result:
    """One synthesized chunk. Unpacks as `(graphemes, phonemes, audio)`, like hexgrad's results."""

    graphemes: str
    phonemes: str
    audio: mx.array  # [1, T] float32 at 24 kHz
    durations: Optional[mx.array] = None  # frames per input token, [n_phonemes + 2]
    trimmed_s: float = 0.0  # silence cut off the start of the audio (at a streamed chunk's join)

    def __iter__(self):
        return iter((self.graphemes, self.phonemes, self.audio))

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / KokoroPipeline.sample_rate


def check_speed(speed: float):
    low, high = SPEED_RANGE
    if not low <= float(speed) <= high:
        raise PipelineError(f"speed must be between {low} and {high}, got {speed}")


class KokoroPipeline:
    sample_rate = 24000

    def __init__(self, lang_code: str, model=None, repo_id: Optional[str] = None):
        if lang_code not in LANG_CODES:
            codes = ", ".join(f"'{c}' ({name})" for c, name in LANG_CODES.items())
            raise PipelineError(f"Unknown lang_code {lang_code!r}; available: {codes}")
        if model is None:
            from ...utils import DEFAULT_MODEL, load_model

            model = load_model(repo_id or DEFAULT_MODEL)
        self.lang_code = lang_code
        self.model = model
        self.voices = VoiceBank(model.path)
        self._g2p = None
        self.lexicon = Lexicon({})

    @property
    def g2p(self):
        if self._g2p is None:  # built on first use: spaCy/misaki take a while to load
            self._g2p = get_g2p(self.lang_code)
        return self._g2p

    def phonemize(self, text: str) -> str:
        if self.lexicon:
            return self.lexicon.phonemize(text, lambda part: self.g2p(part)[0])
        return self.g2p(text)[0]

    def with_lexicon(self, lexicon) -> "KokoroPipeline":
        """This pipeline (same model, voices and G2P) with a pronunciation lexicon `{"word": "phonemes"}`
        applied before G2P. A copy, so that concurrent requests with other lexicons don't meet."""
        lexicon = lexicon if isinstance(lexicon, Lexicon) else Lexicon(lexicon or {})
        for word, phonemes in lexicon.entries.items():
            unknown = sorted({c for c in phonemes if c not in self.model.vocab and not c.isspace()})
            if unknown:
                raise LexiconError(f"lexicon entry {word!r}: the model doesn't know the symbols {' '.join(unknown)}")
        view = copy.copy(self)
        view.lexicon = lexicon
        return view

    def word_timings(self, result: "Result", offset_s: float = 0.0) -> list:
        """[captions.WordTiming] for each word of a chunk's text, from its predicted durations; `offset_s`
        is the chunk's start in the take."""
        if result.durations is None:
            return []
        spans = phoneme_word_spans(result.phonemes, result.durations, self.model.vocab,
                                   self.model.frame_size / self.sample_rate)
        words = shift(align_words(result.graphemes, spans, self.phonemize), offset_s - result.trimmed_s)
        return [replace(w, start_s=max(w.start_s, offset_s)) for w in words]  # none before the chunk

    def __call__(
        self,
        text: str,
        voice: str,
        speed: float = 1.0,
        split_pattern: Optional[str] = r"\n+",
        first_chunk_max: Optional[int] = None,
    ) -> Iterator[Result]:
        """One `Result` per chunk. `first_chunk_max` (for streaming) caps the first chunk's phonemes, cut at a
        clause or phrase boundary, so that audio starts sooner; each later chunk may be `STREAM_GROWTH` times
        longer than the one before, up to the model's limit. Without it, chunks are packed up to that limit.

        Bad input (empty text, a speed out of range, an unknown voice, a split pattern that is not a regex or
        takes too long on this text) raises here, at the call; the chunks are phonemized and spoken as they
        are asked for, so a caller can check input before it takes a lock and make each chunk under it."""
        if not isinstance(text, str) or not text.strip():
            raise PipelineError("text is empty: give some text to speak")
        check_speed(speed)
        pack = self.voices.resolve(voice)
        parts = split_text(text, split_pattern)
        return self._speak_text(text, parts, voice, pack, speed, first_chunk_max)

    def _speak_text(self, text: str, parts: list, voice, pack, speed, first_chunk_max) -> Iterator[Result]:
        mismatch = script_mismatch(text, self.lang_code)
        if mismatch:
            logger.warning(mismatch)
        chunks = self._chunk_parts(parts)
        if not chunks:
            hint = f". {mismatch}" if mismatch else ""
            raise PipelineError(f"nothing pronounceable in the text: {text[:80]!r}{hint}")
        yield from self._speak(chunks, voice, pack, speed, first_chunk_max, self.phonemize, self.g2p.phrase_ends)

    def from_phonemes(
        self, phonemes: str, voice: str, speed: float = 1.0, first_chunk_max: Optional[int] = None
    ) -> Iterator[Result]:
        """Speak raw phonemes (to override pronunciations); long input is chunked like text. Bad input raises
        here, at the call."""
        return self.from_phoneme_lines([phonemes], voice, speed, first_chunk_max)

    def from_phoneme_lines(
        self, lines, voice: str, speed: float = 1.0, first_chunk_max: Optional[int] = None
    ) -> Iterator[Result]:
        """Speak edited phonemes, one chunk per line (a string is cut at its line breaks; blank lines are
        skipped; a line over the model's limit is chunked like text). `first_chunk_max` caps the first line.
        Every line is checked here, at the call, before any is spoken."""
        lines = [line.strip() for line in (lines.splitlines() if isinstance(lines, str) else lines) if line.strip()]
        if not lines:
            raise PipelineError("phonemes are empty")
        check_speed(speed)
        per_line = []
        for line in lines:
            unknown = sorted({c for c in line if c not in self.model.vocab and not c.isspace()})
            if unknown:
                raise PipelineError(f"phonemes contain symbols the model doesn't know: {' '.join(unknown)}")
            per_line.append(self._pack(self._split_to_limit(line, _same)))
            if not per_line[-1]:
                raise PipelineError(f"nothing pronounceable in the phonemes: {line[:80]!r}")
        pack = self.voices.resolve(voice)
        return self._speak_lines(per_line, voice, pack, speed, first_chunk_max)

    def _speak_lines(self, per_line: list, voice, pack, speed, first_chunk_max) -> Iterator[Result]:
        for i, chunks in enumerate(per_line):
            yield from self._speak(chunks, voice, pack, speed, first_chunk_max if i == 0 else None, _same, word_gaps)

    def _speak(
        self, chunks: list, voice, pack: mx.array, speed: float, first_chunk_max, phonemize, phrase_ends
    ) -> Iterator[Result]:
        if first_chunk_max:
            chunks = self._stream_schedule(chunks, first_chunk_max, phonemize, phrase_ends)
        else:
            chunks = ((graphemes, phonemes, False) for graphemes, phonemes in chunks)
        maker = f"Kokoro {self.model.path} with voice {str(voice).strip()!r}"
        cut_before = False
        for graphemes, phonemes, cut_after in chunks:
            result = self.synthesize(phonemes, pack, speed, graphemes)
            check_take(result.audio, maker, graphemes or phonemes, self.sample_rate)  # every chunk has speech
            yield self._trim_joins(result, cut_before, cut_after)
            cut_before = cut_after

    def _trim_joins(self, result: Result, lead: bool, trail: bool) -> Result:
        """The result with its silence trimmed to JOIN_LEAD_S at a cut start and JOIN_TRAIL_S at a cut end."""
        if not (lead or trail):
            return result
        silent_start, silent_end = silence_ends(result.audio, self.sample_rate)
        start = round(max(0.0, silent_start - JOIN_LEAD_S) * self.sample_rate) if lead else 0
        end = result.audio.shape[-1] - (round(max(0.0, silent_end - JOIN_TRAIL_S) * self.sample_rate) if trail else 0)
        return Result(result.graphemes, result.phonemes, result.audio[:, start:end], result.durations,
                      start / self.sample_rate)

    @classmethod
    def _stream_schedule(cls, chunks: list, first_cap: int, phonemize, phrase_ends) -> Iterator[tuple]:
        """The chunks recut for streaming, as (graphemes, phonemes, cut_after): about `first_cap` phonemes first,
        then caps growing by STREAM_GROWTH, so that no chunk keeps a listener waiting while it is made. Cuts are
        made as they are reached; `cut_after` says the next chunk goes on with this one's sentence."""
        cap = first_cap
        for chunk in chunks:
            while len(chunk[1]) > cap:
                pieces = cls._cut_head(*chunk, cap, phonemize, phrase_ends)
                if len(pieces) == 1:
                    break
                head, chunk = pieces
                yield (*head, not SENTENCE_FINAL.search(head[0]))
                cap = round(cap * STREAM_GROWTH)
            yield (*chunk, False)
            cap = round(cap * STREAM_GROWTH)

    @staticmethod
    def _cut_head(graphemes: str, phonemes: str, cap: int, phonemize, phrase_ends=word_gaps) -> list:
        """Split a chunk in two so that the head has about `cap` phonemes: at a clause end if there is one in
        the second half of that span, else at the last phrase end (`phrase_ends(text)`: word gaps, or phrase
        ends in Japanese) before it, else at the first clause or phrase end after it."""
        target = len(graphemes) * cap // len(phonemes)
        clause_ends = [m.end() for m in CLAUSE_END.finditer(graphemes)]
        word_ends = phrase_ends(graphemes)
        within = [e for e in clause_ends if target // 2 <= e <= target] or [e for e in word_ends if 0 < e <= target]
        later = [e for e in clause_ends + word_ends if e > target]
        cut = (within or [min(later, default=0)])[-1]
        head, tail = graphemes[:cut].strip(), graphemes[cut:].strip()
        if not head or not tail:
            return [(graphemes, phonemes)]
        return [(head, phonemize(head).strip()), (tail, phonemize(tail).strip())]

    def synthesize(self, phonemes: str, pack: mx.array, speed: float, graphemes: str = "") -> Result:
        output = self.model(phonemes, style_for_length(pack, len(phonemes)), speed=speed)
        return Result(graphemes, phonemes, output.audio[None], output.durations)

    def chunk_text(self, text: str, split_pattern: Optional[str] = r"\n+") -> list:
        """(graphemes, phonemes) pairs, each under the phoneme limit, covering all pronounceable text."""
        return self._chunk_parts(split_text(text, split_pattern))

    def _chunk_parts(self, parts: list) -> list:
        chunks = []
        for part in parts:
            sentences = [s for s in SENTENCE_END.split(part.strip()) if s.strip()]
            pieces = [p for s in sentences for p in self._split_to_limit(s, self.phonemize)]
            chunks += self._pack(pieces)
        return chunks

    def _split_to_limit(self, text: str, phonemize) -> list:
        """[(graphemes, phonemes)] for `text`, cutting at clauses, then words, until each fits."""
        phonemes = phonemize(text).strip()
        if not any(c in self.model.vocab and c not in PUNCTUATION for c in phonemes):
            return []  # nothing to say: only punctuation, or symbols the model doesn't know
        if len(phonemes) <= self.model.max_phonemes:
            return [(text, phonemes)]
        for pattern in (CLAUSE_END, WORD_GAP):
            pieces = [p for p in pattern.split(text) if p.strip()]
            if len(pieces) > 1:
                halves = [" ".join(pieces[: len(pieces) // 2]), " ".join(pieces[len(pieces) // 2 :])]
                return [chunk for half in halves for chunk in self._split_to_limit(half, phonemize)]
        # One "word" longer than the limit (e.g. no spaces at all): cut it by characters.
        middle = len(text) // 2
        return self._split_to_limit(text[:middle], phonemize) + self._split_to_limit(text[middle:], phonemize)

    def _pack(self, pieces: list) -> list:
        """Join consecutive pieces while they fit, so the model sees whole sentences in context."""
        packed = []
        for graphemes, phonemes in pieces:
            if packed and len(packed[-1][1]) + 1 + len(phonemes) <= self.model.max_phonemes:
                g, p = packed[-1]
                packed[-1] = (f"{g} {graphemes}", f"{p} {phonemes}")
            else:
                packed.append((graphemes, phonemes))
        return packed
