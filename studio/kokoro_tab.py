"""Kokoro tab: text or edited phonemes to speech, with a labelled voice picker, blends, streaming with Stop,
a per-chunk table and the measured figures of each take."""

import logging
import shutil

import gradio as gr

from . import longform_tab
from .engine import (
    DEFAULT_SPLITTER,
    MAX_TEXT_CHARS,
    SPLITTERS,
    STREAM_FIRST_CHUNK,
    VALID_BITS,
    Quantization,
    ext,
    load_lexicon,
    script_mismatch,
)
from .widgets import (
    DEFAULT_LANG,
    ENGINE_QUEUE,
    PLAIN_PLAYER,
    default_voice,
    labelled_voices,
    language_choices,
    language_update,
    model_input,
    take_stats,
    ui_errors,
    voice_choices,
)

logger = logging.getLogger("mlx_tts.studio")

# English first: it reads without CJK fonts, and English G2P works offline with any voice (the embedded
# model's are Japanese).
EXAMPLES = [
    ["The quick brown fox jumps over the lazy dog.", "a"],
    ["Kokoro is an open-weight model with eighty two million parameters.", "b"],
    ["こんにちは。今日はとてもいい天気ですね。", "j"],
    ["吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。", "j"],
]
FULL_PRECISION = "full precision"
PRECISIONS = [FULL_PRECISION] + [f"{bits}-bit" for bits in sorted(VALID_BITS, reverse=True)]
CHUNK_HEADERS = ["#", "text", "phonemes", "seconds"]


def precision_to_quantization(label: str):
    """'8-bit' -> Quantization(8) (group 64, every layer); 'full precision' -> None."""
    if not label or label == FULL_PRECISION:
        return None
    if label not in PRECISIONS:
        raise gr.Error(f"Unknown precision {label!r}; choose one of: {', '.join(PRECISIONS)}", print_exception=False)
    return Quantization(int(label.split("-")[0]))


def stream_unavailable() -> str | None:
    """Why Stream can't work on this machine, or None: Gradio encodes streamed audio with ffmpeg."""
    if shutil.which("ffmpeg") is None:
        return ("Stream needs ffmpeg, which is not installed here (not on PATH): Gradio encodes streamed audio "
                "with it. Install it (`apt install ffmpeg`, `brew install ffmpeg`) and restart the studio; "
                "Generate works without it.")
    return None


def report_kernel_wait(progress):
    """Say why the first take waits, while the native CPU kernels are still being compiled."""
    if not ext.ready():
        progress(0, desc="Waiting for the fast kernels to finish compiling (once per machine)")


def language_note(text, lang_code):
    """Warn (a toast) when the text's script and the language disagree; returns the note for the stats."""
    mismatch = script_mismatch(text or "", lang_code)
    if mismatch:
        gr.Warning(mismatch)
        return f"\n\n⚠️ {mismatch}"
    return ""


def splitter_input(policy):
    """Named splitters; lab mode also takes a regex of its own (run with a time limit)."""
    info = "where the text is cut into parts" + ("" if policy.public else ", or your own regex (1 s limit)")
    return gr.Dropdown(list(SPLITTERS), value=DEFAULT_SPLITTER, label="Split pattern", info=info,
                       allow_custom_value=not policy.public)


def chunk_rows(take):
    return [[i + 1, graphemes, phonemes, round(seconds, 2)] for i, (graphemes, phonemes, seconds) in
            enumerate(take.chunks)]


def build(engine, default_model: str):
    try:
        voices, summary = ui_errors(engine.kokoro_voices)(default_model)
    except gr.Error as e:  # the page still opens; the status says what went wrong
        voices, summary = [], f"Could not load `{default_model}`: {e.message}"
    first_voice = default_voice(voices)
    no_stream = stream_unavailable()
    if no_stream:
        logger.warning(no_stream)

    with gr.Tab("Kokoro", id="kokoro"):
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(
                    label="Text",
                    lines=5,
                    value=EXAMPLES[0][0],
                    info=f"Up to {MAX_TEXT_CHARS} characters; long text is cut into chunks at sentences.",
                    elem_id="kokoro-text",
                )
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="kokoro-generate")
                    stream = gr.Button("Stream", elem_id="kokoro-stream", interactive=not no_stream)
                    stop = gr.Button("Stop", variant="stop", elem_id="kokoro-stop", interactive=not no_stream)
                if no_stream:
                    gr.Markdown(f"⚠️ {no_stream}", elem_id="kokoro-stream-unavailable")
                audio = gr.Audio(label="Take", type="filepath", interactive=False, waveform_options=PLAIN_PLAYER,
                                 elem_id="kokoro-audio")
                streamed = gr.Audio(
                    label="Stream (plays while it is made)", streaming=True, autoplay=True, interactive=False,
                    elem_id="kokoro-stream-audio",
                )
                downloads = gr.File(label="Downloads (wav, flac; captions srt, vtt)", file_count="multiple",
                                    interactive=False)
                stats = gr.Markdown(elem_id="kokoro-stats", label="stats")
            with gr.Column(scale=2):
                model = model_input(engine.policy, default_model)
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
                    value=DEFAULT_LANG,
                    label="Language",
                )
                speed = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speed")
                split_pattern = splitter_input(engine.policy)
                seed = gr.Number(value=0, precision=0, label="Seed", info="same seed and settings, same audio")
                lexicon = gr.File(label="Pronunciation lexicon (JSON or CSV)", file_types=[".json", ".csv"],
                                  type="filepath", elem_id="kokoro-lexicon")
                gr.Markdown('`{"word": "phonemes"}` or `word,phonemes` rows, applied before G2P for this session; '
                            "the stats list the words it replaced.")
        gr.Examples(EXAMPLES, inputs=[text, lang], label="Example texts")
        with gr.Accordion("Phonemes and chunks", open=True):
            phonemes = gr.Textbox(
                label="Phonemes, one chunk per line: edit them to fix a pronunciation, then speak them",
                lines=3,
                elem_id="kokoro-phonemes",
            )
            speak_phonemes = gr.Button("Speak edited phonemes")
            table = gr.Dataframe(headers=CHUNK_HEADERS, label="Chunks", interactive=False, wrap=True)
        longform_tab.build(engine, model, precision, voice, blend, lang, speed, seed,
                           enabled=not engine.policy.public)  # public mode keeps its bounds

    @ui_errors
    def load_voices(model_id, precision, text=""):
        """Load the model; pick its default voice, and follow that voice's language unless the text disagrees."""
        names, summary = engine.kokoro_voices(model_id, precision_to_quantization(precision))
        return voice_choices(names), language_update(default_voice(names), text), summary

    def request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed, phonemes=None,
                lexicon_file=None):
        """The engine's arguments for these settings: the blend, when given, replaces the picked voice."""
        return dict(model_id=model_id, quantization=precision_to_quantization(precision), text=text,
                    voice=(blend or "").strip() or voice, lang_code=lang_code, speed=speed,
                    split_pattern=split_pattern, seed=seed, phonemes=phonemes,
                    lexicon=load_lexicon(lexicon_file) if lexicon_file else None)

    @ui_errors
    def kokoro_generate(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                        lexicon_file=None, progress=gr.Progress()):
        """Speak text with Kokoro-82M. Returns the take (wav), downloads (wav, flac and srt, vtt captions with
        word timings), the phonemes (one line per chunk), a table of chunks and the take's figures.

        Args:
            model_id: Kokoro model, a Hugging Face repo id or a local folder (the studio's default if empty).
            precision: "full precision", or "8-bit" ... "2-bit" to quantize in process.
            text: the text to speak (at most 5000 characters); long text is cut into chunks at sentences.
            voice: a voice name of the model, e.g. "jf_alpha" (the first letter is its language).
            blend: a weighted voice mix such as "jf_alpha(2)+jf_nezumi(1)"; when given it replaces voice.
            lang_code: language of the text: a, b (English), e, f, h, i, p, j (Japanese), z (Mandarin).
            speed: speaking rate, 0.5 to 2 (1 is normal).
            split_pattern: how the text is cut into parts before sentence splitting: "lines", "sentences",
                "paragraphs" or "none" (in lab mode also a regular expression).
            seed: random seed; the same seed and settings give the same audio.
            lexicon_file: optional JSON or CSV file of {"word": "phonemes"} applied before G2P.
        """
        note = language_note(text, lang_code)
        report_kernel_wait(progress)
        take = engine.kokoro_take(
            **request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                      lexicon_file=lexicon_file), progress=progress
        )
        phoneme_lines = "\n".join(p for _, p, _ in take.chunks)
        return take.files[0], take.files, phoneme_lines, chunk_rows(take), take_stats(take) + note

    @ui_errors
    def kokoro_phonemes(model_id, precision, phonemes, voice, blend, lang_code, speed, seed,
                        progress=gr.Progress()):
        """Speak Kokoro phonemes exactly as given (to fix a pronunciation), one chunk per line. Returns the take
        (wav), downloads, a table of chunks and the take's figures.

        Args:
            model_id: Kokoro model, a Hugging Face repo id or a local folder (the studio's default if empty).
            precision: "full precision", or "8-bit" ... "2-bit" to quantize in process.
            phonemes: Kokoro phoneme text (misaki's symbols, as /kokoro_generate returns them), one chunk a line.
            voice: a voice name of the model, e.g. "jf_alpha".
            blend: a weighted voice mix such as "jf_alpha(2)+jf_nezumi(1)"; when given it replaces voice.
            lang_code: language code of the voice (a, b, e, f, h, i, p, j, z).
            speed: speaking rate, 0.5 to 2 (1 is normal).
            seed: random seed; the same seed and settings give the same audio.
        """
        take = engine.kokoro_take(
            **request(model_id, precision, "", voice, blend, lang_code, speed, None, seed, phonemes), progress=progress
        )
        return take.files[0], take.files, chunk_rows(take), take_stats(take)

    @ui_errors
    def stream_take(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                    lexicon_file=None, progress=gr.Progress()):
        """Stream the speech chunk by chunk; the last message carries the downloads and the figures."""
        if no_stream:
            raise gr.Error(no_stream, print_exception=False)
        note = language_note(text, lang_code)
        report_kernel_wait(progress)
        takes = engine.kokoro_takes(
            **request(model_id, precision, text, voice, blend, lang_code, speed, split_pattern, seed,
                      lexicon_file=lexicon_file),
            first_chunk_max=STREAM_FIRST_CHUNK, progress=progress,
        )
        for chunk_file, take in takes:
            phoneme_lines = "\n".join(p for _, p, _ in take.chunks)
            if chunk_file is not None:
                yield chunk_file, gr.update(), phoneme_lines, chunk_rows(take), take_stats(take) + note
            else:
                yield None, take.files, phoneme_lines, chunk_rows(take), take_stats(take) + note

    settings = [model, precision, text, voice, blend, lang, speed, split_pattern, seed, lexicon]
    load.click(load_voices, [model, precision, text], [voice, lang, model_status], api_name="kokoro_load",
               **ENGINE_QUEUE)
    voice.change(language_update, [voice, text], lang, api_name="kokoro_voice_language", api_visibility="undocumented",
                 queue=False)
    generate.click(kokoro_generate, settings, [audio, downloads, phonemes, table, stats], api_name="kokoro_generate",
                   **ENGINE_QUEUE)
    speak_phonemes.click(
        kokoro_phonemes, [model, precision, phonemes, voice, blend, lang, speed, seed],
        [audio, downloads, table, stats],
        api_name="kokoro_phonemes", **ENGINE_QUEUE,
    )
    streaming = stream.click(stream_take, settings, [streamed, downloads, phonemes, table, stats],
                             api_name="kokoro_stream", **ENGINE_QUEUE)
    stop.click(None, cancels=[streaming], api_name="kokoro_stop", api_visibility="private")
