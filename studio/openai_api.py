"""An OpenAI-compatible speech API on the studio's server, over the studio's `Engine` (no model logic here).

- `POST /v1/audio/speech`: `model`, `input`, `voice`, `response_format`, `speed`, `stream`, as OpenAI's endpoint,
  plus `lang_code`, `lexicon` (`{"word": "phonemes"}`) and `seed`. Other fields (a split pattern, say) are
  refused by name.
- `POST /v1/audio/speech/captioned`: the same request; JSON with the audio (base64) and word timestamps.
- `GET /v1/models`, `GET /v1/audio/voices`: what can be asked for now (`csm` once its weights are here).

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 bad input, 401 a missing
or wrong key (when one is set), 404 an unknown model or voice, 413 input too long, 503 too many requests
waiting. `ApiSettings.from_config` reads the app's flags and the studio's policy: a lab studio serves every
model, a public one Kokoro, and CSM when the studio's allowlist has the CSM model.
"""

import base64
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from huggingface_hub import snapshot_download
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlx_tts import audio as audio_io
from mlx_tts.errors import MlxTtsError
from mlx_tts.g2p import LANG_CODES
from mlx_tts.lexicon import Lexicon, LexiconError
from mlx_tts.models.kokoro import VoiceBank
from mlx_tts.models.kokoro.pipeline import SPEED_RANGE, STREAM_FIRST_CHUNK
from mlx_tts.models.kokoro.voices import VoiceError
from mlx_tts.take import csm_takes, kokoro_takes

from .engine import CSM_MODEL, MAX_TEXT_CHARS, Engine
from .policy import Policy, StudioError, check_seed

logger = logging.getLogger("mlx_tts.studio.api")

KOKORO_NAMES = ("kokoro", "tts-1", "tts-1-hd")
MODEL_NAMES = KOKORO_NAMES + ("csm",)
# OpenAI's voices -> Kokoro v1.0 voices of the same gender and character. Where the loaded model lacks that voice
# (the offline default has only Japanese ones), OpenAI's voices of a gender take the model's voices of that
# gender in turn (alloy, coral, nova... -> jf_alpha, jf_gongitsune, jf_nezumi...), or all its voices if none.
OPENAI_VOICES = {
    "alloy": "af_alloy", "ash": "am_adam", "ballad": "bm_george", "coral": "af_jessica", "echo": "am_echo",
    "fable": "bm_fable", "nova": "af_nova", "onyx": "am_onyx", "sage": "af_sarah", "shimmer": "af_sky",
    "verse": "am_michael", "marin": "af_heart", "cedar": "am_liam",
}
CSM_SPEAKERS = 10  # CSM voices are speaker ids "0".."9" (no reference clip over the API)
BLEND_TERM = re.compile(r"^\s*(?P<voice>[^()\s]+)\s*(?P<weight>\([^()]*\))?\s*$")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


@dataclass
class ApiSettings:
    kokoro_model: str
    csm_model: str = CSM_MODEL
    api_key: Optional[str] = None
    public: bool = False
    allowed_models: Optional[tuple] = None  # names of MODEL_NAMES; None: every model (lab), Kokoro only (public)
    max_input_chars: int = MAX_TEXT_CHARS
    max_waiting: int = 16

    @classmethod
    def from_config(cls, config, policy: Optional[Policy] = None, **overrides) -> "ApiSettings":
        """Settings from the app's configuration (app.py's parsed flags, or a config object with the same
        attributes: model, csm_model, api_key, max_queue) and the studio's policy (lab when none is given)."""
        policy = policy or Policy()
        csm_model = getattr(config, "csm_model", CSM_MODEL)
        values = dict(
            kokoro_model=config.model, csm_model=csm_model, api_key=getattr(config, "api_key", None) or None,
            public=policy.public, max_waiting=getattr(config, "max_queue", 16),
        )
        if policy.public and allows(policy, csm_model):
            values["allowed_models"] = MODEL_NAMES  # the studio offers CSM to visitors: so does the API
        return cls(**{**values, **overrides})

    @property
    def models(self) -> tuple:
        """The model names this server answers to: CSM's voice cloning is a lab feature unless allowed."""
        if self.allowed_models is not None:
            return tuple(name for name in MODEL_NAMES if name in self.allowed_models)
        return KOKORO_NAMES if self.public else MODEL_NAMES


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    voice: str
    response_format: Literal[tuple(audio_io.ENCODINGS)] = "mp3"
    speed: float = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    stream: bool = False
    stream_format: Literal["audio"] = "audio"  # the openai client's field; server-sent events are not offered
    lang_code: Optional[Literal[tuple(LANG_CODES)]] = None
    lexicon: Optional[dict[str, str]] = None
    seed: int = 0

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, seed: int) -> int:
        return check_seed(seed)  # the studio's check: beyond 0..2^32-1 MLX raises TypeError


def _validation_error(e: ValidationError) -> ApiError:
    first = e.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        fields = ", ".join(SpeechRequest.model_fields)
        return ApiError(400, f"unknown parameter {param!r}: this endpoint takes {fields}", param, "unknown_parameter")
    if first["type"] == "value_error":  # a studio check's own message, which says what is accepted
        return ApiError(400, str(first["ctx"]["error"]), param, "invalid_value")
    return ApiError(400, f"{param}: {first['msg']}", param, "invalid_value")


def allows(policy: Policy, model_id: str) -> bool:
    """Whether the studio's policy lets `model_id` be loaded."""
    try:
        policy.model_source(model_id)
    except StudioError:
        return False
    return True


def on_disk(source: str) -> bool:
    """Whether loading `source` needs no download: a local folder, or a Hub repo already in the local cache."""
    if Path(source).expanduser().exists():
        return True
    try:
        snapshot_download(source, local_files_only=True)
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or not a repo id (HFValidationError)
        return False
    return True


def openai_voice_table(names: list) -> dict:
    """OpenAI's voice names -> the loaded model's voice each stands for."""
    if not names:
        return {}
    table = {}
    for gender in sorted({voice[1] for voice in OPENAI_VOICES.values()}):
        ours = [n for n in names if len(n) > 1 and n[1] == gender] or names
        theirs = [(openai, voice) for openai, voice in OPENAI_VOICES.items() if voice[1] == gender]
        for i, (openai, voice) in enumerate(theirs):
            table[openai] = voice if voice in names else ours[i % len(ours)]
    return {openai: table[openai] for openai in OPENAI_VOICES}


class SpeechAPI:
    """The routes, over one Engine. A request holds a waiting slot until its audio starts (all of it, when not
    streamed); one that finds all `max_waiting` slots taken gets 503."""

    def __init__(self, engine: Engine, settings: ApiSettings):
        self.engine = engine
        self.settings = settings
        self._slots = threading.BoundedSemaphore(max(1, settings.max_waiting))

    # ---- requests -----------------------------------------------------------------------------------

    def check_key(self, request: Request):
        key = self.settings.api_key
        if not key:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", None,
                           "invalid_api_key")

    async def parse(self, request: Request) -> SpeechRequest:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the request body must be JSON", None, "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
        try:
            speech = SpeechRequest.model_validate(body)
        except ValidationError as e:
            raise _validation_error(e) from None
        if speech.model not in MODEL_NAMES:
            raise ApiError(404, f"unknown model {speech.model!r}; this server has {', '.join(self.settings.models)}",
                           "model", "model_not_found")
        if speech.model not in self.settings.models:
            raise ApiError(404, f"model {speech.model!r} is not served here; available: "
                           f"{', '.join(self.settings.models)}", "model", "model_not_found")
        if not speech.input.strip():
            raise ApiError(400, "input is empty: give some text to speak", "input", "empty_input")
        if len(speech.input) > self.settings.max_input_chars:
            raise ApiError(413, f"input has {len(speech.input)} characters; at most {self.settings.max_input_chars} "
                           "are taken per request", "input", "input_too_long")
        return speech

    # ---- voices -------------------------------------------------------------------------------------

    def kokoro_voice_names(self) -> list:
        return VoiceBank(self.engine.kokoro_model(self.settings.kokoro_model).folder).names()

    def kokoro_voice(self, spec: str) -> str:
        """A voice spec with OpenAI's names mapped; every voice must be one of the model's (no file paths)."""
        names = self.kokoro_voice_names()
        table = openai_voice_table(names)
        terms = []
        for term in re.split(r"[+,]", spec):
            match = BLEND_TERM.match(term)
            if not match:
                raise ApiError(400, f"can't read {term.strip()!r} in the voice {spec!r}; write a name, or a "
                               "blend such as jf_alpha(2)+jf_nezumi(1)", "voice", "invalid_voice")
            name = table.get(match["voice"].lower(), match["voice"])
            if name not in names:
                raise ApiError(404, f"unknown voice {match['voice']!r}; available: {', '.join(names)}, or one of "
                               f"OpenAI's: {', '.join(OPENAI_VOICES)}", "voice", "voice_not_found")
            terms.append(name + (match["weight"] or ""))
        return "+".join(terms)

    # ---- CSM ----------------------------------------------------------------------------------------

    def csm_pipeline(self):
        """CSM's pipeline, its model loaded on first use; a 404 that says why when it can't be."""
        try:
            return self.engine.csm(self.settings.csm_model)[1]
        except MlxTtsError as e:
            raise ApiError(404, f"model 'csm' is not available: {e}", "model", "model_not_available") from None

    def csm_servable(self) -> bool:
        """Whether a `csm` request would be answered now: the load it makes, tried only when the model's files
        are already here (listing the models must not start a download of gigabytes)."""
        if "csm" not in self.settings.models:
            return False
        try:
            if not on_disk(self.engine.policy.model_source(self.settings.csm_model)):
                return False
            self.csm_pipeline()
        except (StudioError, ApiError):
            return False
        return True

    # ---- synthesis ----------------------------------------------------------------------------------

    def chunks(self, speech: SpeechRequest, captions: bool = False) -> Iterator:
        """Audio chunks (float32, 24 kHz) of the request, each made under the engine's lock; with `captions`,
        (chunk, word timings) pairs. The first chunk is made before this returns, so bad input fails here."""
        if speech.model == "csm":
            if captions:
                raise ApiError(400, "word timestamps come from Kokoro's durations; CSM has none", "model",
                               "unsupported_model")
            if speech.lexicon or speech.lang_code:
                raise ApiError(400, "CSM reads text as it is: 'lexicon' and 'lang_code' are Kokoro's",
                               "lexicon" if speech.lexicon else "lang_code", "unsupported_parameter")
            pieces = self._csm_chunks(speech)
        else:
            pieces = self._kokoro_chunks(speech, captions)
        try:
            first = next(pieces)
        except StopIteration:
            raise ApiError(400, "nothing to say in the input", "input", "empty_input") from None
        return self._chain(first, pieces)

    @staticmethod
    def _chain(first, rest):
        yield first
        yield from rest

    def _kokoro_chunks(self, speech: SpeechRequest, captions: bool) -> Iterator:
        voice = self.kokoro_voice(speech.voice)
        lang_code = speech.lang_code or (voice[0] if voice[0] in LANG_CODES else "a")
        pipeline = self.engine.kokoro(self.settings.kokoro_model, None, lang_code)
        if speech.lexicon:
            pipeline = pipeline.with_lexicon(Lexicon(speech.lexicon))
        first_chunk_max = STREAM_FIRST_CHUNK if speech.stream else None
        takes = kokoro_takes(pipeline, speech.input, voice, speech.speed, seed=speech.seed,
                             first_chunk_max=first_chunk_max, lock=self.engine.lock, words=captions)
        words = 0
        for take in takes:
            if captions:
                yield take.pieces[-1], take.words[words:]
                words = len(take.words)
            else:
                yield take.pieces[-1]

    def _csm_chunks(self, speech: SpeechRequest) -> Iterator:
        pipeline = self.csm_pipeline()
        if speech.voice not in {str(i) for i in range(CSM_SPEAKERS)} and speech.voice.lower() not in OPENAI_VOICES:
            raise ApiError(404, f"unknown CSM voice {speech.voice!r}: give a speaker id 0-{CSM_SPEAKERS - 1} "
                           "(or one of OpenAI's names, for speaker 0)", "voice", "voice_not_found")
        speaker = int(speech.voice) if speech.voice.isdigit() else 0
        takes = csm_takes(pipeline, speech.input, speech.seed, self.engine.lock, speaker=speaker, speed=speech.speed)
        for take in takes:
            yield take.pieces[-1]

    # ---- routes -------------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1")
        router.add_api_route("/audio/speech", self.speech, methods=["POST"], include_in_schema=False)
        router.add_api_route("/audio/speech/captioned", self.captioned_speech, methods=["POST"],
                             include_in_schema=False)
        router.add_api_route("/models", self.list_models, methods=["GET"], include_in_schema=False)
        router.add_api_route("/audio/voices", self.list_voices, methods=["GET"], include_in_schema=False)
        return router

    async def _answer(self, request: Request, make):
        """Run `make(speech)` in a worker thread with a waiting slot held; errors become OpenAI's JSON."""
        try:
            self.check_key(request)
            speech = await self.parse(request)
            if not self._slots.acquire(blocking=False):
                raise ApiError(503, "the server is busy: too many requests waiting; retry shortly", None,
                               "server_busy", "server_error")
        except ApiError as e:
            return e.response()
        try:
            return await run_in_threadpool(make, speech)
        except ApiError as e:
            return e.response()
        except (VoiceError, LexiconError) as e:
            param = "voice" if isinstance(e, VoiceError) else "lexicon"
            return ApiError(400, str(e), param, "invalid_value").response()
        except (MlxTtsError, ValueError, FileNotFoundError) as e:  # the engine's own messages say what to fix
            return ApiError(400, str(e), None, "invalid_request").response()
        except Exception as e:
            logger.exception("speech API: %s failed", request.url.path)
            detail = "" if self.settings.public else f": {type(e).__name__}: {e}"
            return ApiError(500, "unexpected server error" + detail, None, None, "server_error").response()
        finally:
            self._slots.release()

    async def speech(self, request: Request):
        return await self._answer(request, self._speech)

    def _speech(self, speech: SpeechRequest):
        chunks = self.chunks(speech)
        media_type = audio_io.MEDIA_TYPES[speech.response_format]
        if not speech.stream:
            audio = np.concatenate(list(chunks))
            return Response(audio_io.encode_audio(audio, audio_io.SAMPLE_RATE, speech.response_format),
                            media_type=media_type)
        return StreamingResponse(self._encoded(chunks, speech.response_format), media_type=media_type)

    @staticmethod
    def _encoded(chunks: Iterator, fmt: str) -> Iterator[bytes]:
        """Encoded bytes as chunks are made (chunked transfer)."""
        encoder = audio_io.AudioStreamEncoder(fmt, audio_io.SAMPLE_RATE)
        for chunk in chunks:
            data = encoder.write(chunk)
            if data:
                yield data
        yield encoder.close()

    async def captioned_speech(self, request: Request):
        return await self._answer(request, self._captioned)

    def _captioned(self, speech: SpeechRequest):
        if speech.stream:
            raise ApiError(400, "captioned speech is not streamed: leave out 'stream'", "stream", "invalid_value")
        pieces, words = [], []
        for chunk, timings in self.chunks(speech, captions=True):
            pieces.append(chunk)
            words += timings
        audio = np.concatenate(pieces)
        encoded = audio_io.encode_audio(audio, audio_io.SAMPLE_RATE, speech.response_format)
        replaced = Lexicon(speech.lexicon or {}).matches(speech.input)
        return JSONResponse({
            "audio": base64.b64encode(encoded).decode("ascii"),
            "response_format": speech.response_format,
            "sample_rate": audio_io.SAMPLE_RATE,
            "duration": len(audio) / audio_io.SAMPLE_RATE,
            "timestamps": [w.as_dict() for w in words],
            "lexicon_replaced": replaced,
        })

    async def list_models(self, request: Request):
        try:
            self.check_key(request)
        except ApiError as e:
            return e.response()
        csm = await run_in_threadpool(self.csm_servable)
        sources = {name: self.settings.kokoro_model for name in KOKORO_NAMES} | {"csm": self.settings.csm_model}
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "mlx-tts", "root": sources[name]}
            for name in self.settings.models if name != "csm" or csm
        ]}

    async def list_voices(self, request: Request):
        try:
            self.check_key(request)
            names = await run_in_threadpool(self.kokoro_voice_names)
            csm = await run_in_threadpool(self.csm_servable)
        except ApiError as e:
            return e.response()
        except (MlxTtsError, ValueError) as e:
            return ApiError(503, f"the Kokoro model is not available: {e}", None, "model_not_available",
                            "server_error").response()
        return {"voices": names, "openai_voices": openai_voice_table(names),
                "csm_voices": [str(i) for i in range(CSM_SPEAKERS)] if csm else []}


def app_kwargs(engine: Engine, settings: ApiSettings) -> dict:
    """`demo.launch(app_kwargs=...)` that puts the API's routes on Gradio's FastAPI app, ahead of its own."""
    return {"routes": SpeechAPI(engine, settings).router().routes}
