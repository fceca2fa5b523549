"""Kokoro-82M: PL-BERT (ALBERT) text encoder, prosody predictor and iSTFTNet decoder, with voice packs."""

from .convert import convert, is_config
from .kokoro import Model, ModelArgs, ModelOutput
from .pipeline import KokoroPipeline, Result
from .voices import VoiceBank

__all__ = ["KokoroPipeline", "Model", "ModelArgs", "ModelOutput", "Result", "VoiceBank", "convert", "is_config"]
