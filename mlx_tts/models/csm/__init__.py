"""Sesame CSM-1B: voice cloning text-to-speech over the Mimi codec.

    from mlx_tts.utils import load_model
    from mlx_tts.models.csm import CSMPipeline

    model = load_model("mlx-community/csm-1b")  # or sesame/csm-1b, or a converted folder
    audio = CSMPipeline(model).generate("Hello from Sesame.", ref_audio="me.wav", ref_text="What I say in me.wav.")

A converted CSM folder is self-contained: `config.json` (the source config plus `codec_config`, the Mimi
hyperparameters, and `"layout": "mlx"`), `model.safetensors` (CSM's weights and, under `codec.`, Mimi's:
one strict load gives a model that encodes references and decodes its own codes) and `tokenizer.json`.
"""

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
