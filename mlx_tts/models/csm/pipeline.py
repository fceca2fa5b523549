"""Voice cloning with CSM: text in, 24 kHz audio out, in the voice of a reference clip.

The prompt is the conversation so far (`context` segments with their audio), then the reference clip with
its transcript, then the text to speak, all as the same `speaker`. Long text is split into sentences, and
each sentence is generated from that same prompt (not from the sentences before it), which keeps the voice
from drifting. `speed` is a pitch-preserving time stretch of each sentence.
"""

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ...audio import audio_stats, check_take, load_audio, time_stretch
from ...errors import MlxTtsError
from ..mimi import StreamingDecoder
from .frames import audio_frame_count, prompt_frames, segment_frames
from .sampling import make_sampler
from .tokenizer import TextTokenizer

FRAME_MS = 80  # one 12.5 Hz codec frame
MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 30.0
SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+|\n+")


class CSMInputError(MlxTtsError, ValueError):
    """Bad input to the pipeline: empty text, a missing transcript, an unusable reference clip or segment."""


@dataclass
class Segment:
    """A turn of the conversation: what `speaker` said (`text`) and how it sounded (`audio`: a path, an array
    at 24 kHz or an (array, sample_rate) tuple)."""

    text: str
    speaker: int = 0
    audio: object = None


def split_sentences(text: str) -> list:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


class CSMPipeline:
    def __init__(self, model, repo_id=None, tokenizer=None):
        """`model` from `mlx_tts.utils.load_model`; the tokenizer is its folder's tokenizer.json unless given
        (a `TextTokenizer` or a path). `repo_id` is accepted for the spec's signature."""
        self.model = model
        self.repo_id = repo_id
        if tokenizer is None:
            if getattr(model, "path", None) is None:
                raise ValueError("this CSM model has no folder (model.path) with a tokenizer.json; pass tokenizer=")
            tokenizer = model.path
        self.tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)
        self.sample_rate = model.sample_rate
        self._codes = {}  # reference audio digest -> Mimi codes, so a reused clip is encoded once

    def generate(
        self,
        text: str,
        ref_audio=None,
        ref_text: str = None,
        speaker: int = 0,
        context: list = None,
        speed: float = 1.0,
        temperature: float = 0.9,
        top_k: int = 50,
        top_p: float = None,
        min_p: float = None,
        seed: int = None,
        max_audio_length_ms: float = 10000,
        progress=None,
    ) -> np.ndarray:
        """The whole audio (float32 mono, 24 kHz) of `text`; the arguments are those of `stream`."""
        chunks = list(self.stream(
            text, ref_audio=ref_audio, ref_text=ref_text, speaker=speaker, context=context, speed=speed,
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
            max_audio_length_ms=max_audio_length_ms, progress=progress,
        ))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def stream(
        self,
        text: str,
        ref_audio=None,
        ref_text: str = None,
        speaker: int = 0,
        context: list = None,
        speed: float = 1.0,
        temperature: float = 0.9,
        top_k: int = 50,
        top_p: float = None,
        min_p: float = None,
        seed: int = None,
        max_audio_length_ms: float = 10000,
        chunk_frames: int = 4,
        progress=None,
    ):
        """Yield the audio (float32, 24 kHz) in chunks of `chunk_frames` frames (80 ms each) as it is
        generated; with `speed` != 1, one chunk per sentence (the stretch needs the whole sentence).

        `ref_audio` needs its transcript `ref_text`. `context`: earlier turns, `Segment`s or dicts with
        text, speaker, audio. Each sentence is at most `max_audio_length_ms` long. `progress(done, total)`
        is called after every frame with frames done and the frames at most still to come plus those done."""
        if not text or not text.strip():
            raise CSMInputError("text is empty: nothing to say")
        if not 0.25 <= speed <= 4.0:
            raise CSMInputError(f"speed must be between 0.25 and 4, got {speed}")
        if max_audio_length_ms < FRAME_MS:
            raise CSMInputError(
                f"max_audio_length_ms must be at least {FRAME_MS} (one frame), got {max_audio_length_ms}"
            )
        if int(chunk_frames) != chunk_frames or chunk_frames < 1:
            raise CSMInputError(f"chunk_frames must be a positive integer, got {chunk_frames}")
        sampler = make_sampler(temperature, top_k, top_p, min_p, seed)
        max_frames = int(max_audio_length_ms // FRAME_MS)

        turns = [self._turn(s, f"context[{i}]") for i, s in enumerate(context or [])]
        if ref_audio is not None:
            if not ref_text or not ref_text.strip():
                raise CSMInputError(
                    "ref_text is required with ref_audio: CSM clones a voice from the clip *and* its exact "
                    "transcript (a missing or wrong transcript garbles the result)"
                )
            turns.append((ref_text, speaker, self._reference_audio(ref_audio)))
        elif ref_text is not None:
            raise CSMInputError("ref_text was given without ref_audio; pass the clip it transcribes")

        texts = split_sentences(text)
        sentences = [self.tokenizer.encode(s, speaker) for s in texts]
        encoded_turns = [(self.tokenizer.encode(t, s), a) for t, s, a in turns]  # (token ids, audio)
        frame_size = self.model.codec.args.frame_size
        context_len = sum(len(ids) + audio_frame_count(len(a), frame_size) for ids, a in encoded_turns)
        for ids in sentences:  # fail before any work if one sentence's prompt can't fit
            self.model.check_fits(context_len + len(ids), max_frames)

        num_codebooks = self.model.args.audio_num_codebooks
        context = None
        if turns:  # the context is the same for every sentence: through the backbone once
            frames = [segment_frames(ids, self._encode(a), num_codebooks) for ids, a in encoded_turns]
            tokens, mask = prompt_frames(frames)
            context = self.model.cache_prompt(mx.array(tokens)[None], mx.array(mask)[None])
        total, done = max_frames * len(sentences), 0

        def frame_done():
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        maker = f"CSM {getattr(self.model, 'path', None) or 'model'}"
        if ref_audio is not None:
            maker += f" cloning {ref_audio if isinstance(ref_audio, (str, Path)) else 'the reference clip'}"
        for ids, sentence in zip(sentences, texts):
            tokens, mask = segment_frames(ids, None, num_codebooks)
            frames = self.model.generate(mx.array(tokens)[None], mx.array(mask)[None], max_frames, sampler, context)
            start = done
            chunks = self._checked(self._audio_chunks(frames, chunk_frames, frame_done), maker, sentence)
            if speed == 1.0:
                yield from chunks
            elif audio := list(chunks):
                yield time_stretch(np.concatenate(audio), speed, self.sample_rate)
            total -= max_frames - (done - start)  # the sentence ended early: fewer frames to come
            if progress is not None:
                progress(done, total)

    def _checked(self, chunks, maker: str, sentence: str):
        """The chunks of a sentence's audio, each checked before it is yielded, the whole sentence at its end."""
        made = []
        for chunk in chunks:
            made.append(check_take(chunk, maker, sentence, self.sample_rate, partial=True))
            yield chunk
        check_take(np.concatenate(made) if made else np.zeros(0, np.float32), maker, sentence, self.sample_rate)

    def _audio_chunks(self, frames, chunk_frames: int, frame_done):
        """Audio of the frames as they come, decoded `chunk_frames` at a time."""
        decoder = StreamingDecoder(self.model.codec)
        pending = []

        def decode_pending():
            return np.array(decoder.decode(mx.stack(pending, axis=-1))[0, 0])

        for frame in frames:
            frame_done()
            pending.append(frame)
            if len(pending) == chunk_frames:
                yield decode_pending()
                pending = []
        if pending:
            yield decode_pending()

    def _turn(self, segment, name: str) -> tuple:
        """(text, speaker, audio) of a context segment: a `Segment` or a dict with the same fields."""
        if isinstance(segment, dict):
            unknown = set(segment) - {"text", "speaker", "audio"}
            if unknown:
                raise CSMInputError(f"{name}: unknown fields {sorted(unknown)}; a segment has text, speaker, audio")
            segment = Segment(**segment)
        if not isinstance(segment, Segment):
            raise CSMInputError(
                f"{name}: expected a Segment or a dict with text, speaker, audio, got {type(segment).__name__}"
            )
        if not segment.text or not segment.text.strip():
            raise CSMInputError(f"{name}: the segment has no text (the transcript of its audio)")
        if segment.audio is None:
            raise CSMInputError(f"{name}: the segment has no audio")
        return segment.text, int(segment.speaker), self._load_clip(segment.audio, f"{name} audio", 0.0)

    def _reference_audio(self, source) -> np.ndarray:
        return self._load_clip(source, "ref_audio", MIN_REFERENCE_S)

    def _load_clip(self, source, name: str, min_seconds: float) -> np.ndarray:
        audio = load_audio(source, self.sample_rate)
        stats = audio_stats(audio, self.sample_rate)
        if audio.size == 0:
            raise CSMInputError(f"{name} is empty")
        if stats["is_silent"]:
            raise CSMInputError(
                f"{name} is silent (RMS {stats['rms_dbfs']:.0f} dBFS); give a clip of the voice speaking"
            )
        if stats["duration_s"] < min_seconds:
            raise CSMInputError(
                f"{name} is {stats['duration_s']:.2f} s long; give at least {min_seconds:g} s of speech"
            )
        if stats["duration_s"] > MAX_REFERENCE_S:
            warnings.warn(
                f"{name} is {stats['duration_s']:.1f} s long; using its first {MAX_REFERENCE_S:g} s "
                f"(trim the clip, and its transcript, to match)",
                stacklevel=2,
            )
            audio = audio[: int(MAX_REFERENCE_S * self.sample_rate)]
        return audio

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        """Mimi codes [codebooks, T] of a clip, cached by content."""
        digest = hashlib.sha1(audio.tobytes()).hexdigest()
        if digest not in self._codes:
            if len(self._codes) >= 8:
                self._codes.pop(next(iter(self._codes)))
            self._codes[digest] = np.array(self.model.codec.encode(audio)[0])
        return self._codes[digest]
