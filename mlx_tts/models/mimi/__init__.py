"""Mimi, Kyutai's neural audio codec (24 kHz <-> 12.5 Hz frames of 32 codes), used by CSM.

A model package like the others (`ModelArgs`, `Model`, `is_config`, `convert`, `Model.sanitize`): a Mimi
checkpoint folder (`kyutai/mimi`, or one holding kyutai's safetensors) loads with `load_model` on its own.
"""

from .convert import KYUTAI_CHECKPOINT, convert, is_config, read_checkpoint
from .model import Model, ModelArgs, StreamingDecoder

__all__ = [
    "KYUTAI_CHECKPOINT",
    "Model",
    "ModelArgs",
    "StreamingDecoder",
    "convert",
    "is_config",
    "read_checkpoint",
]
