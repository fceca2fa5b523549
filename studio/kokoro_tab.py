"""Kokoro tab: text or edited phonemes to speech, with a labelled voice picker, blends, streaming with Stop,
a per-chunk table and the measured figures of each take."""

import re

import gradio as gr

from mlx_tts.g2p import LANG_CODES
from mlx_tts.models.kokoro.pipeline import STREAM_FIRST_CHUNK
from mlx_tts.quantize import VALID_BITS

from . import longform_tab
from .engine import MAX_TEXT_CHARS, Quantization, ui_errors

EXAMPLES = [
    ["こんにちは。今日はとてもいい天気ですね。", "j"],
    ["吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。", "j"],
    ["The quick brown fox jumps over the lazy dog.", "a"],
    ["Kokoro is an open-weight model with eighty two million parameters.", "b"],
]
FULL_PRECISION = "full precision"
PRECISIONS = [FULL_PRECISION] + [f"{bits}-bit" for bits in sorted(VALID_BITS, reverse=True)]
GENDERS = {"f": "female", "m": "male"}
CHUNK_HEADERS = ["#", "text", "phonemes", "seconds"]
# Results play in the browser's own <audio> player: it shows the length at once and any client can drive it.
PLAIN_PLAYER = gr.WaveformOptions(show_recording_waveform=False)


def precision_to_quantization(label: str):
    """'8-bit' -> Quantization(8) (group 64, every layer); 'full precision' -> None."""
    if not label or label == FULL_PRECISION:
        return None
    if label not in PRECISIONS:
        raise gr.Error(f"Unknown precision {label!r}; choose one of: {', '.join(PRECISIONS)}", print_exception=False)
    return Quantization(int(label.split("-")[0]))


def voice_language(name: str):
    """The language code in a Kokoro voice name (<language><gender>_<name>, e.g. 'jf_alpha'), if it has one."""
    if name and re.match(r"^[a-z][fm]_", name) and name[0] in LANG_CODES:
        return name[0]
    return None


def voice_label(name: str) -> str:
    """'jf_alpha' -> 'jf_alpha · Japanese · female'."""
    code = voice_language(name)
    return f"{name} · {LANG_CODES[code]} · {GENDERS[name[1]]}" if code else name


def language_update(name):
    """Follow the voice: a Japanese voice switches the language to Japanese, and so on."""
    return voice_language(name) or gr.update()


def labelled_voices(names: list) -> list:
    """(label, name) pairs for a voice dropdown."""
    return [(voice_label(v), v) for v in names]


def voice_choices(names: list):
    return gr.update(choices=labelled_voices(names), value=names[0] if names else None)


def language_choices():
    return [(f"{name} ({code})", code) for code, name in LANG_CODES.items()]


def chunk_rows(take):
    return [[i + 1, graphemes, phonemes, round(seconds, 2)] for i, (graphemes, phonemes, seconds) in
            enumerate(take.chunks)]


def build(engine, default_model: str):
    try:
        voices, summary = engine.kokoro_voices(default_model)
    except gr.Error as e:  # the page still opens; the status says what went wrong
        voices, summary = [], f"Could not load `{default_model}`: {e.message}"
    first_voice = voices[0] if voices else None

    with gr.Tab("Kokoro", id="kokoro"):
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(
                    label="Text",
                    lines=5,
                    value=EXAMPLES[0][0] if voice_language(first_voice) == "j" else EXAMPLES[2][0],
                    info=f"Up to {MAX_TEXT_CHARS} characters; long text is cut into chunks at sentences.",
                    elem_id="kokoro-text",
                )
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="kokoro-generate")
                    stream = gr.Button("Stream", elem_id="kokoro-stream")
                    stop = gr.Button("Stop", variant="stop", elem_id="kokoro-stop")
                audio = gr.Audio(label="Take", type="filepath", interactive=False, waveform_options=PLAIN_PLAYER,
                                 elem_id="kokoro-audio")
                streamed = gr.Audio(
                    label="Stream (plays while it is made)", streaming=True, autoplay=True, interactive=False,
                    elem_id="kokoro-stream-audio",
                )
                downloads = gr.File(label="Downloads (wav, flac)", file_count="multiple", interactive=False)
                stats = gr.Markdown(elem_id="kokoro-stats", label="stats")
            with gr.Column(scale=2):
                model = gr.Textbox(label="Model", value=default_model, info="Hugging Face repo id or local folder")
                with gr.Row():
                    precision = gr.Dropdown(PRECISIONS, value=FULL_PRECISION, label="Precision",
                                            info="quantized in process (group 64)")
                    load = gr.Button("Load model")
                model_status = gr.Markdown(summary, label="model status")
                voice = gr.Dropdown(labelled_voices(voices), value=first_voice, label="Voice", allow_custom_value=True)
                blend = gr.Textbox(
                    label="Voice blend",
                    placeholder="jf_alpha(2)+jf_nezumi(1)",
                    value="",
                    info="Weighted mix of voices; when filled it replaces the picker.",
                )
                lang = gr.Dropdown(
                    language_choices(),
                    value=voice_language(first_voice) or "a",
                    label="Language",
                )
                speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed")
                split_pattern = gr.Textbox(value=r"\n+", label="Split pattern",
                                           info="regex that cuts the text into parts")
                seed = gr.Number(value=0, precision=0, label="Seed", info="same seed and settings, same audio")
        gr.Examples(EXAMPLES, inputs=[text, lang], label="Example texts")
        with gr.Accordion("Phonemes and chunks", open=True):
            phonemes = gr.Textbox(
                label="Phonemes, one chunk per line: edit them to fix a pronunciation, then speak them",
                lines=3,
                elem_id="kokoro-phonemes",
            )
            speak_phonemes = gr.Button("Speak edited phonemes")
            table = gr.Dataframe(headers=CHUNK_HEADERS, label="Chunks", interactive=False, wrap=True)
        longform_tab.build(engine, model, precision, voice, blend, lang, speed, seed, enabled=True)

    def load_voices(model_id, precision):
        names, summary = engine.kokoro_voices(model_id, precision_to_quantization(precision))
        return voice_choices(names), language_update(names[0] if names else None), summary

    def request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed, phonemes=None):
        """The engine's arguments for these settings: the blend, when given, replaces the picked voice."""
        return dict(model_id=model_id, quantization=precision_to_quantization(precision), text=text,
                    voice=(blend or "").strip() or voice, lang_code=lang_code, speed=speed,
                    split_pattern=split_pattern, seed=seed, phonemes=phonemes)

    @ui_errors
    def generate_take(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                      progress=gr.Progress()):
        """Speak the text; returns the take (wav), downloads (wav, flac), its phonemes, chunk table and stats."""
        take = engine.kokoro_take(
            **request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed), progress=progress
        )
        phoneme_lines = "\n".join(p for _, p, _ in take.chunks)
        return take.files[0], take.files, phoneme_lines, chunk_rows(take), take.stats_markdown()

    @ui_errors
    def speak_edited(model_id, precision, phonemes, voice, blend, lang_code, speed, seed, progress=gr.Progress()):
        """Speak phonemes as given, one chunk per line; returns the take, downloads, chunk table and stats."""
        take = engine.kokoro_take(
            **request(model_id, precision, "", voice, blend, lang_code, speed, None, seed, phonemes), progress=progress
        )
        return take.files[0], take.files, chunk_rows(take), take.stats_markdown()

    @ui_errors
    def stream_take(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                    progress=gr.Progress()):
        """Stream the speech chunk by chunk; the last message carries the downloads and the figures."""
        takes = engine.kokoro_takes(
            **request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed),
            first_chunk_max=STREAM_FIRST_CHUNK, progress=progress,
        )
        for chunk_file, take in takes:
            phoneme_lines = "\n".join(p for _, p, _ in take.chunks)
            if chunk_file is not None:
                yield chunk_file, gr.update(), phoneme_lines, chunk_rows(take), take.stats_markdown()
            else:
                yield None, take.files, phoneme_lines, chunk_rows(take), take.stats_markdown()

    settings = [model, precision, text, voice, blend, lang, speed, split_pattern, seed]
    engine_queue = dict(concurrency_id="engine", concurrency_limit=1)
    load.click(load_voices, [model, precision], [voice, lang, model_status], api_name="kokoro_load", **engine_queue)
    voice.change(language_update, voice, lang, api_name="kokoro_voice_language", api_visibility="undocumented",
                 queue=False)
    generate.click(generate_take, settings, [audio, downloads, phonemes, table, stats], api_name="kokoro_generate",
                   **engine_queue)
    speak_phonemes.click(
        speak_edited, [model, precision, phonemes, voice, blend, lang, speed, seed], [audio, downloads, table, stats],
        api_name="kokoro_phonemes", **engine_queue,
    )
    streaming = stream.click(stream_take, settings, [streamed, downloads, phonemes, table, stats],
                             api_name="kokoro_stream", **engine_queue)
    stop.click(None, cancels=[streaming], api_name="kokoro_stop", api_visibility="private")
