"""The Kokoro tab's "Long-form" accordion: a book (.txt, .md, .epub) or a dataset (.csv, .jsonl) to audio files,
with `mlx_tts.batch` in the studio's process, on the model, voice and settings picked in the tab.

Each upload gets its own output folder, named by the file's hash: uploading the same file again (after a
stop, or with one failed chapter fixed in the settings) resumes there instead of starting over."""

import html
import zipfile
from pathlib import Path

import gradio as gr

from .engine import LONGFORM_FORMATS as FORMATS, LONGFORM_SUFFIXES as SUFFIXES, LongformSettings
from .widgets import ENGINE_QUEUE, ui_errors


def zip_outputs(summary) -> Path:
    """The run's files (unit audio, manifest, joined book) in one zip beside its folder."""
    archive = summary.outdir.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # audio does not compress
        for path in summary.files():
            zf.write(path, path.name)
    return archive


def build(engine, model, precision, voice, blend, lang, speed, seed, enabled: bool = True):
    """The accordion, over the Kokoro tab's own settings components; nothing when not `enabled` (public
    mode, whose bounds on text length it would bypass)."""
    if not enabled:
        return
    with gr.Accordion("Long-form: books and datasets", open=False):
        gr.Markdown(
            "Upload a book (`.txt`, `.md`: chapters at headings or blank-line runs; `.epub`: chapters from its "
            "spine) or a dataset (`.csv`/`.jsonl` rows of `id,text[,voice,lang]`). Each chapter or row becomes "
            "a file; a book is also joined into one file with `chapters.json` and `book.srt`. Uploading the "
            "same file again resumes where it stopped. For many workers or a cluster, use "
            "`python -m mlx_tts.batch`."
        )
        with gr.Row():
            source = gr.File(label="Book or dataset", file_types=list(SUFFIXES), type="filepath",
                             elem_id="longform-file")
            audio_format = gr.Radio(list(FORMATS), value="wav", label="Format")
        make = gr.Button("Make audio", variant="primary", elem_id="longform-make")
        outputs = gr.File(label="Outputs (zip of everything; the joined book)", file_count="multiple",
                          interactive=False, elem_id="longform-outputs")
        status = gr.Markdown(elem_id="longform-status")

    @ui_errors
    def make_audio(path, audio_format, model_id, precision, voice, blend, lang_code, speed, seed,
                   progress=gr.Progress()):
        """Speak a whole book or dataset file; returns the zip and book files, and a summary."""
        from .kokoro_tab import precision_to_quantization  # not at the top: kokoro_tab imports this module

        if not path:
            raise gr.Error(f"Upload a file first: one of {', '.join(SUFFIXES)}", print_exception=False)
        path = Path(path)
        settings = LongformSettings(model=f"{model_id} ({precision})", voice=(blend or "").strip() or voice,
                                    lang=lang_code, speed=float(speed), format=audio_format, seed=int(seed))
        summary = engine.longform(path, model_id, precision_to_quantization(precision), settings, progress)
        files = [zip_outputs(summary)] + [f for f in summary.book if f.suffix.lstrip(".") in FORMATS + ("srt",)]
        lines = html.escape(summary.describe(), quote=False).splitlines()
        return [str(f) for f in files], "\n\n".join(lines)

    make.click(make_audio, [source, audio_format, model, precision, voice, blend, lang, speed, seed],
               [outputs, status], api_name="kokoro_longform", **ENGINE_QUEUE)
