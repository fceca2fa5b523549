"""What the tabs share: the engine's queue slot, the error display, the plain player, the Model box, voice and
language pickers, and the figures of a take."""

import functools
import html
import inspect
import logging
import re
import time
import uuid
from typing import Callable, Optional

import gradio as gr

from .engine import DEFAULT_MODEL, LANG_CODES, MlxTtsError, peak_rss_mb, script_mismatch  # noqa: F401

logger = logging.getLogger("mlx_tts.studio")

# Engine events share one queue slot: they share the CPU and MLX's random state.
ENGINE_QUEUE = dict(concurrency_id="engine", concurrency_limit=1)
# Results play in the browser's own <audio> player: it shows the length at once and any client can drive it.
PLAIN_PLAYER = gr.WaveformOptions(show_recording_waveform=False)
DEFAULT_LANG = "a"
GENDERS = {"f": "female", "m": "male"}


def ui_errors(fn):
    """Turn exceptions from `fn` (a function or a generator) into `gr.Error` with a plain message: an
    `MlxTtsError`'s own message, or for anything else "internal error" with an id that the log's traceback has."""

    def to_ui_error(e):
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, MlxTtsError):
            message = str(e)
        else:
            error_id = uuid.uuid4().hex[:8]
            logger.error("studio: internal error %s in %s", error_id, fn.__name__, exc_info=e)
            message = f"Internal error (id {error_id}); the server log has the details under that id."
        return gr.Error(html.escape(message, quote=False), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as e:
                raise to_ui_error(e) from None

        return generator

    @functools.wraps(fn)
    def function(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise to_ui_error(e) from None

    return function


def model_input(policy, default_model: str, **kwargs):
    """The Model box: a dropdown of the allowlist in public mode, a free repo id or folder in lab mode."""
    if policy.public:
        return gr.Dropdown(list(policy.allowed_models), value=default_model, label="Model",
                           info="the models this studio offers", **kwargs)
    return gr.Textbox(label="Model", value=default_model,
                      info=f"Hugging Face repo id, or a folder under {policy.output_root.name}/ or --model-dir",
                      **kwargs)


def voice_language(name: str):
    """The language code in a Kokoro voice name (<language><gender>_<name>, e.g. 'jf_alpha'), if it has one."""
    if name and re.match(r"^[a-z][fm]_", name) and name[0] in LANG_CODES:
        return name[0]
    return None


def voice_label(name: str) -> str:
    """'jf_alpha' -> 'jf_alpha · Japanese · female'."""
    code = voice_language(name)
    return f"{name} · {LANG_CODES[code]} · {GENDERS[name[1]]}" if code else name


def language_update(name, text=None):
    """Follow the voice (a Japanese voice switches the language to Japanese, and so on), unless the text is
    in a script that language does not read: then the language stays with the text."""
    code = voice_language(name)
    if not code or (text and script_mismatch(text, code)):
        return gr.update()
    return code


def default_voice(names: list):
    """An American English voice when the model has one, else its first voice (which speaks English too)."""
    return next((v for v in names if voice_language(v) == DEFAULT_LANG), names[0] if names else None)


def labelled_voices(names: list) -> list:
    """(label, name) pairs for a voice dropdown."""
    return [(voice_label(v), v) for v in names]


def voice_choices(names: list):
    return gr.update(choices=labelled_voices(names), value=default_voice(names))


def language_choices():
    return [(f"{name} ({code})", code) for code, name in LANG_CODES.items()]


def take_stats(take) -> str:
    """The figures of an `mlx_tts.take.Take` and the settings that made it, as Markdown."""
    settings = " · ".join(f"{k} `{v}`" for k, v in take.settings.items())
    replaced = f"\n\nLexicon replaced: {', '.join(take.replaced)}" if take.replaced else ""
    return (
        f"**{take.seconds:.2f} s** of audio in {take.elapsed_s:.2f} s · real-time factor "
        f"**{take.real_time_factor:.2f}** (below 1 is faster than real time) · peak memory "
        f"**{take.peak_mlx_mb:.0f} MB** MLX, {peak_rss_mb():.0f} MB process RSS\n\n{settings}{replaced}"
    )


def frame_progress(progress: Optional[Callable]):
    """A CSM frame callback for a Gradio progress bar: frames done and an estimated time left."""
    if progress is None:
        return None
    start = time.perf_counter()

    def on_frame(done: int, total: int):
        elapsed = time.perf_counter() - start
        eta = elapsed / max(done, 1) * (total - done)
        desc = f"Frame {done}/{total} · {elapsed:.0f} s elapsed · {eta:.0f} s left at most"
        progress(done / max(total, 1), desc=desc)

    return on_frame
