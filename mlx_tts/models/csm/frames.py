"""CSM prompts as frames: each position has 32 audio-code columns and one text column, plus a mask.

A text segment puts its tokens in the text column; an audio segment puts its Mimi codes in the code columns
and ends with an all-zero frame (end of audio). Segments are concatenated in conversation order.
"""

import numpy as np


def text_frames(token_ids, num_codebooks: int) -> tuple:
    tokens = np.zeros((len(token_ids), num_codebooks + 1), np.int32)
    mask = np.zeros(tokens.shape, bool)
    tokens[:, -1] = token_ids
    mask[:, -1] = True
    return tokens, mask


def audio_frames(codes) -> tuple:
    """codes [codebooks, T] -> T + 1 frames: the codes, then the end-of-audio frame."""
    codes = np.asarray(codes)
    tokens = np.zeros((codes.shape[1] + 1, codes.shape[0] + 1), np.int32)
    mask = np.zeros(tokens.shape, bool)
    tokens[:-1, :-1] = codes.T
    mask[:, :-1] = True
    return tokens, mask


def segment_frames(token_ids, codes, num_codebooks: int) -> tuple:
    """One segment: its text, then its audio's codes if it has audio (`codes` None for the text to speak)."""
    parts = [text_frames(token_ids, num_codebooks)]
    if codes is not None:
        parts.append(audio_frames(codes))
    return tuple(np.concatenate(p) for p in zip(*parts))


def prompt_frames(segments) -> tuple:
    """(tokens, mask) of several segments' frames, each given as a (tokens, mask) pair, in order."""
    tokens, masks = zip(*segments)
    return np.concatenate(tokens), np.concatenate(masks)


def audio_frame_count(num_samples: int, frame_size: int) -> int:
    """Positions an audio segment of `num_samples` takes: its codec frames and the end-of-audio frame."""
    return -(-num_samples // frame_size) + 1
