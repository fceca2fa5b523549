"""Sesame CSM-1B: voice cloning text-to-speech over the Mimi codec."""

from .convert import convert, is_config
from .model import FLAVORS, Model, ModelArgs
from .pipeline import CSMPipeline, Segment
from .sampling import make_sampler
from .tokenizer import TextTokenizer

__all__ = [
    "CSMPipeline",
    "FLAVORS",
    "Model",
    "ModelArgs",
    "Segment",
    "TextTokenizer",
    "convert",
    "is_config",
    "make_sampler",
]
