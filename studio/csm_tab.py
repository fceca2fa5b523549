"""CSM tab: clone the voice of a reference clip (with its transcript) onto new text.

CSM-1B's weights are not part of the offline install, so this tab starts unloaded and says what to download
and where to point it when loading fails. On a CPU generation is far slower than real time: it reports
progress and an estimate of the time left."""

import gradio as gr

from .engine import MAX_REFERENCE_S, MIN_REFERENCE_S
from .widgets import ENGINE_QUEUE, PLAIN_PLAYER, frame_progress, model_input, take_stats, ui_errors

# Advice on the reference clip, checked against its stats (seconds, dBFS, fraction of clipped samples).
CLIP_ADVICE = [
    (lambda s: s["is_silent"], "The clip is silent: record or upload speech."),
    (lambda s: s["duration_s"] < MIN_REFERENCE_S, f"Too short: CSM needs at least {MIN_REFERENCE_S:g} s."),
    (lambda s: MIN_REFERENCE_S <= s["duration_s"] < 3, "Short clip: CSM clones better from 5 to 15 s of speech."),
    (lambda s: s["duration_s"] > MAX_REFERENCE_S,
     f"Too long: CSM takes at most {MAX_REFERENCE_S:g} s; trim it to 5 to 15 s."),
    (lambda s: s["clipped_fraction"] > 0.001,
     "The clip is clipped (samples at full scale): the clone copies the distortion. Record at a lower level."),
    (lambda s: not s["is_silent"] and s["rms_dbfs"] < -40, "The clip is very quiet: normalize it or record closer."),
]


def unavailable_status(model_id: str, message: str) -> str:
    return (
        f"**CSM weights for `{model_id}` are not available.** {message}\n\n"
        "To use this tab, download CSM-1B on a machine with network: `mlx-community/csm-1b` (MLX-Audio's layout) or "
        "`sesame/csm-1b` (original), e.g. `hf download mlx-community/csm-1b --local-dir ~/csm-1b`. "
        "These hold neither the Mimi codec nor the text tokenizer: put `tokenizer-e351c8d8-checkpoint125.safetensors` "
        "(from `kyutai/moshiko-pytorch-bf16`) and `tokenizer.json` (from `unsloth/Llama-3.2-1B`) in the same folder, "
        "or let the converter fetch them where the Hub is reachable. Then type that folder in **Model** and press "
        "**Load model**, or start the studio with `python app.py --csm-model ~/csm-1b` "
        "(or `MLX_TTS_CSM_MODEL=~/csm-1b`)."
    )


def clip_report(stats: dict) -> str:
    rate = f"{stats['sample_rate']} Hz" if stats["sample_rate"] else "unknown rate"
    lines = [
        f"**{stats['duration_s']:.1f} s** · {rate} (the model hears it at 24 kHz mono) · "
        f"peak {stats['peak_dbfs']:.1f} dBFS · loudness (RMS) {stats['rms_dbfs']:.1f} dBFS"
    ]
    lines += [f"⚠️ {advice}" for check, advice in CLIP_ADVICE if check(stats)]
    return "\n\n".join(lines)


def build(engine, default_model: str):
    with gr.Tab("CSM voice cloning", id="csm"):
        with gr.Row():
            model = model_input(engine.policy, default_model, scale=3)
            load = gr.Button("Load model", scale=1, elem_id="csm-load")
        status = gr.Markdown(
            "Not loaded. Press **Load model**: CSM-1B's weights must be downloaded once (they are not part of the "
            "offline install), and on a CPU it generates far slower than real time.",
            elem_id="csm-status",
            label="status",
        )
        with gr.Row():
            with gr.Column():
                ref_audio = gr.Audio(label="Reference clip (voice to clone)", sources=["upload", "microphone"],
                                     type="filepath")
                clip_info = gr.Markdown(label="clip report")
                ref_text = gr.Textbox(label="Transcript of the reference clip", lines=2, value="",
                                      info="A missing or wrong transcript is the usual cause of garbled clones.")
                text = gr.Textbox(label="Text to speak", lines=3, value="Hello from Sesame, running on MLX.")
            with gr.Column():
                speaker = gr.Number(value=0, precision=0, minimum=0, label="Speaker id")
                temperature = gr.Slider(0.1, 1.5, value=0.9, step=0.05, label="Temperature")
                top_k = gr.Slider(1, 200, value=50, step=1, label="Top-k")
                max_ms = gr.Slider(400, 30000, value=10000, step=80, label="Maximum length (ms)",
                                   info="per sentence; one frame is 80 ms")
                seed = gr.Number(value=0, precision=0, label="Seed")
                generate = gr.Button("Generate", variant="primary")
        audio = gr.Audio(label="Clone", type="filepath", interactive=False, waveform_options=PLAIN_PLAYER)
        downloads = gr.File(label="Downloads (wav, flac)", file_count="multiple", interactive=False)
        stats = gr.Markdown(label="stats")

    def load_model(model_id):
        """Load the CSM model; the status says what is loaded, or what to download and where to point the app."""
        try:
            return ui_errors(engine.csm_status)(model_id)
        except gr.Error as e:
            return unavailable_status(model_id, e.message)

    def describe_clip(ref_audio):
        """Duration, sample rate and loudness of the reference clip, with warnings."""
        if not ref_audio:
            return ""
        try:
            return clip_report(ui_errors(engine.reference_clip)(ref_audio))
        except gr.Error as e:
            return f"⚠️ **Can't use this clip:** {e.message}"

    @ui_errors
    def clone(model_id, ref_audio, ref_text, text, speaker, temperature, top_k, max_audio_length_ms, seed,
              progress=gr.Progress()):
        """Speak the text in the reference clip's voice; returns audio, downloads and stats."""
        try:
            ui_errors(engine.csm_status)(model_id)
        except gr.Error as e:  # the same advice as the status line, as plain text for the error popup
            raise gr.Error(unavailable_status(model_id, e.message).replace("**", "").replace("`", ""),
                           print_exception=False) from None
        take = engine.csm_take(model_id, text, ref_audio, ref_text, speaker, temperature, top_k, max_audio_length_ms,
                               seed, progress=progress, on_frame=frame_progress(progress))
        return take.files[0], take.files, take_stats(take)

    load.click(load_model, model, status, api_name="csm_load", **ENGINE_QUEUE)
    ref_audio.change(describe_clip, ref_audio, clip_info, api_name="csm_reference")
    generate.click(clone, [model, ref_audio, ref_text, text, speaker, temperature, top_k, max_ms, seed],
                   [audio, downloads, stats], api_name="csm_generate", **ENGINE_QUEUE)
