"""Mimi, Kyutai's neural audio codec (24 kHz <-> 12.5 Hz frames of 32 codes), used by CSM."""

from .convert import KYUTAI_CHECKPOINT, convert, convert_weights, is_config, read_checkpoint
from .model import Model, ModelArgs, StreamingDecoder

__all__ = [
    "KYUTAI_CHECKPOINT",
    "Model",
    "ModelArgs",
    "StreamingDecoder",
    "convert",
    "convert_weights",
    "is_config",
    "read_checkpoint",
]
