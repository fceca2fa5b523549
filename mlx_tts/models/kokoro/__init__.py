from .convert import convert, is_config
from .kokoro import Model, ModelArgs, ModelOutput
from .pipeline import KokoroPipeline, Result
from .voices import VoiceBank
