"""Quantization workbench: quantize a model in process and measure what it costs against full precision on
the same text, voice and seed: size, memory, load time, speed, and how far the audio moves."""

import gradio as gr
import numpy as np
import pandas as pd

from .engine import RECIPES, VALID_BITS, VALID_GROUP_SIZES, Quantization, check_bits, check_group_size
from .widgets import (
    DEFAULT_LANG,
    ENGINE_QUEUE,
    PLAIN_PLAYER,
    default_voice,
    labelled_voices,
    language_choices,
    language_update,
    model_input,
    ui_errors,
    voice_choices,
)

TABLE_HEADERS = ["measure", "full precision", "quantized"]
HISTORY_COLUMNS = ["bits", "log-mel distance (dB)", "group size", "recipe"]
# Colour stops for the spectrogram image, dark (quiet) to bright (loud).
COLOURS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], np.float32)


def comparison_table(result: dict) -> list:
    def both(key, digits):
        return [round(result[f"{key}_reference"], digits), round(result[f"{key}_candidate"], digits)]

    return [
        ["size on disk (MB)"] + both("disk_mb", 1),
        ["parameters in memory (MB)"] + both("memory_mb", 1),
        ["load time (s)"] + both("load_s", 2),
        ["real-time factor"] + [round(result["rtf_reference"], 3), round(result["rtf_candidate"], 3)],
        ["peak memory during the take (MB, MLX)"] + both("peak_memory_mb", 0),
    ]


def quality_markdown(result: dict, quantization: Quantization) -> str:
    lines = [
        f"**{quantization}** against full precision, same text, voice and seed:",
        f"- log-mel distance: **{result['log_mel_distance_db']:.2f} dB** (mean absolute difference of the spectra; "
        "0 is identical)",
        f"- waveform SNR: **{result['snr_db']:.1f} dB** (takes drift apart in phase, so this falls fast; "
        "the log-mel distance is the better guide to what you hear)",
        f"- length: quantized take is {result['length_ratio']:.3f}× the full-precision one",
    ]
    if "durations" in result:
        d = result["durations"]
        lines.append(f"- phoneme durations: {d['tokens_equal']:.0%} identical ({d['frames_candidate']} frames "
                     f"against {d['frames_reference']})")
    kept = result["kept_full_precision"]
    if kept:
        lines.append(f"- kept in full precision (layers the recipe or the group size excludes, {len(kept)}): "
                     + ", ".join(f"`{k}`" for k in kept[:12]) + (" …" if len(kept) > 12 else ""))
    return "\n".join(lines)


def spectrogram_image(log_mels: dict, width=720, dynamic_range_db=80.0) -> np.ndarray:
    """Full precision (top), quantized (middle) and their absolute difference (bottom) as one RGB image,
    time stretched to `width` pixels, low frequencies at the bottom."""
    reference, candidate = log_mels["reference"], log_mels["candidate"]
    n = min(len(reference), len(candidate))
    columns = np.linspace(0, n - 1, width).round().astype(int)
    top = reference.max()
    panels = [
        (reference[columns] - top) / dynamic_range_db + 1,
        (candidate[columns] - top) / dynamic_range_db + 1,
        np.abs(reference[columns] - candidate[columns]) / 20,  # 20 dB of difference is full brightness
    ]
    rows = []
    for values in panels:
        position = np.clip(values.T[::-1], 0, 1) * (len(COLOURS) - 1)
        low = np.floor(position).astype(int).clip(0, len(COLOURS) - 2)
        weight = (position - low)[..., None]
        panel = COLOURS[low] * (1 - weight) + COLOURS[low + 1] * weight
        rows += [np.repeat(panel, 2, axis=0), np.full((6, width, 3), 255.0)]  # mel bins are few: 2 px each
    return np.concatenate(rows[:-1]).astype(np.uint8)


def build(engine, default_model: str):
    try:
        voices, _ = ui_errors(engine.kokoro_voices)(default_model)
    except gr.Error:
        voices = []
    first_voice = default_voice(voices)

    with gr.Tab("Quantization workbench", id="quant"):
        with gr.Row():
            with gr.Column(scale=2):
                model = model_input(engine.policy, default_model)
                with gr.Row():
                    # Text choices, as the API documents them; the handler also takes numbers (checked there).
                    bits = gr.Dropdown([str(b) for b in VALID_BITS], value="8", label="Bits", allow_custom_value=True)
                    group_size = gr.Dropdown([str(g) for g in VALID_GROUP_SIZES], value="64", label="Group size",
                                             allow_custom_value=True)
                    recipe = gr.Dropdown(list(RECIPES), value="uniform", label="Recipe",
                                         info="which layers get which bits")
            with gr.Column(scale=3):
                text = gr.Textbox(label="Test text", lines=2, value="Hello there.")
                with gr.Row():
                    voice = gr.Dropdown(labelled_voices(voices), value=first_voice, label="Voice",
                                        allow_custom_value=True, scale=2)  # room for the longest labels
                    lang = gr.Dropdown(language_choices(), value=DEFAULT_LANG, label="Language")
                    seed = gr.Number(value=0, precision=0, label="Seed")
        compare = gr.Button("Quantize and compare", variant="primary", elem_id="quant-compare")
        with gr.Row():
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Full precision against quantized", interactive=False)
            with gr.Column():
                reference_audio = gr.Audio(label="A: full precision", type="filepath", interactive=False,
                                           waveform_options=PLAIN_PLAYER, elem_id="quant-reference")
                candidate_audio = gr.Audio(label="B: quantized", type="filepath", interactive=False,
                                           waveform_options=PLAIN_PLAYER, elem_id="quant-candidate")
        measures = gr.Markdown(label="quality measures", elem_id="quant-measures")
        with gr.Row():
            spectrograms = gr.Image(label="Log-mel spectrograms: full precision, quantized, |difference|",
                                    type="numpy", interactive=False)
            history_plot = gr.ScatterPlot(x="bits", y="log-mel distance (dB)", color="group size",
                                          x_axis_format="d", y_axis_format=".2~f",
                                          label="This session: log-mel distance against bits")
        history = gr.State([])
        with gr.Row():
            if engine.policy.public:  # nothing is saved on the server: the visitor downloads the folder
                save = gr.Button("Download the quantized model (zip)", scale=1)
                saved = gr.File(label="Quantized model (a zip of the folder load_model loads)", interactive=False,
                                scale=3)
            else:
                destination = gr.Textbox(label=f"Save the quantized model as a folder under "
                                         f"{engine.policy.output_root}", placeholder="folder name",
                                         info="e.g. kokoro-8bit; a new or empty folder", value="", scale=3)
                save = gr.Button("Save", scale=1)
        if not engine.policy.public:
            saved = gr.Markdown(label="save status")

    def quantization(bits, group_size, recipe) -> Quantization:
        """The settings as given by the page, or as numbers or their text through the API."""
        return Quantization(check_bits(bits), check_group_size(group_size), recipe)

    @ui_errors
    def quant_compare(model_id, bits, group_size, recipe, text, voice, lang_code, seed, runs, progress=gr.Progress()):
        """Quantize a Kokoro model and measure what it costs against full precision on the same text, voice and
        seed. Returns a table (size on disk and in memory, load time, real-time factor, peak memory), the full
        precision (A) and quantized (B) takes as wav, quality measures (log-mel distance, SNR, length and
        phoneme-duration agreement), log-mel spectrograms and log-mel distance against bits over the session.

        Args:
            model_id: Kokoro model to quantize, a Hugging Face repo id or a local folder.
            bits: bits per weight: 2, 3, 4, 5, 6 or 8.
            group_size: weights sharing one scale and bias: 32, 64 or 128.
            recipe: which layers to quantize: "uniform", "mixed" (sensitive ones at 8 bits), "keep-embeddings".
            text: the text both takes speak.
            voice: a voice name of the model, e.g. "jf_alpha".
            lang_code: language of the text (a, b, e, f, h, i, p, j, z).
            seed: random seed shared by both takes.
        """
        q = quantization(bits, group_size, recipe)
        result = engine.quantize_and_compare(model_id, q, text, voice, lang_code, seed, progress)
        runs = runs + [[q.bits, round(result["log_mel_distance_db"], 3), str(q.group_size), q.recipe]]
        return (
            comparison_table(result),
            result["files"]["reference"],
            result["files"]["candidate"],
            quality_markdown(result, q),
            spectrogram_image(result["log_mel"]),
            pd.DataFrame(runs, columns=HISTORY_COLUMNS).sort_values("bits"),
            runs,
        )

    @ui_errors
    def save_folder(model_id, bits, group_size, recipe, folder):
        """Save the quantized model (quantizing first if needed) as a folder under the output root."""
        path = engine.save_quantized(model_id, quantization(bits, group_size, recipe), folder)
        return (f"Saved to `{path}`. Load it with `load_model({str(path)!r})`, or type the folder in the Kokoro "
                "tab's Model box.")

    @ui_errors
    def download_zip(model_id, bits, group_size, recipe):
        """The quantized model (quantizing first if needed) as a zip of the folder load_model loads."""
        return str(engine.save_quantized(model_id, quantization(bits, group_size, recipe)))

    @ui_errors
    def load_voices(model_id):
        names, _ = engine.kokoro_voices(model_id)
        return voice_choices(names)

    model_picked = model.change if engine.policy.public else model.submit  # a dropdown has no submit
    model_picked(load_voices, model, voice, api_name="quant_voices", **ENGINE_QUEUE)
    voice.change(language_update, [voice, text], lang, api_name="quant_voice_language",
                 api_visibility="undocumented", queue=False)
    compare.click(
        quant_compare,
        [model, bits, group_size, recipe, text, voice, lang, seed, history],
        [table, reference_audio, candidate_audio, measures, spectrograms, history_plot, history],
        api_name="quant_compare",
        **ENGINE_QUEUE,
    )
    if engine.policy.public:
        save.click(download_zip, [model, bits, group_size, recipe], saved, api_name="quant_download", **ENGINE_QUEUE)
    else:
        save.click(save_folder, [model, bits, group_size, recipe, destination], saved, api_name="quant_save",
                   **ENGINE_QUEUE)
