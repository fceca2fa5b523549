"""The studio: one Gradio Blocks app with the Kokoro, CSM voice-cloning and quantization-workbench tabs."""

import gradio as gr

from mlx_tts.cache import cache_dir

from . import csm_tab, kokoro_tab, quant_tab
from .engine import DEFAULT_MODEL, Engine, ext
from .policy import CSM_MODEL, MAX_AUDIO_UPLOAD_MB, MAX_AUDIO_UPLOAD_S, MAX_TEXT_CHARS

TITLE = "mlx-tts studio"
INTRO = (
    "Text to speech in MLX: **Kokoro-82M** with preset voices, **Sesame CSM-1B** voice cloning, and a "
    "workbench that measures what quantization costs. Every button is also an API endpoint "
    "(see *Use via API* at the bottom of the page)."
)
CSS = "#kokoro-stats, #csm-status {min-height: 2em}"
MAX_FILE_SIZE = f"{MAX_AUDIO_UPLOAD_MB}mb"  # Gradio refuses larger uploads before they reach the disk


def mode_markdown(policy) -> str:
    limits = (f"Limits: {MAX_TEXT_CHARS} characters of text, reference clips up to {MAX_AUDIO_UPLOAD_S} s and "
              f"{MAX_AUDIO_UPLOAD_MB} MB.")
    if policy.public:
        return (f"**Public mode**: models from a fixed list, voices by name or upload, nothing saved on the server "
                f"(quantized models come as a zip download); one request runs at a time. {limits}")
    return (f"**Lab mode**: folders are written under `{policy.output_root}`; local models load from there, the "
            f"model cache and `--model-dir` folders. {limits}")


KERNELS_PREPARING = (
    "**Preparing fast kernels…** The native CPU kernels are compiled once per machine (about a minute); "
    "a take asked for now starts when they are ready."
)
KERNELS_UNAVAILABLE = (
    "The native CPU kernels could not be built (the server log says why): takes use MLX's own, slower CPU ops."
)


def kernels_status() -> str:
    """The page's line about the native CPU kernels: preparing, unavailable, or nothing once they are ready."""
    if not ext.ready():
        return KERNELS_PREPARING
    return "" if ext.cpu_kernels() is not None else KERNELS_UNAVAILABLE


def build_app(engine: Engine = None, kokoro_model=DEFAULT_MODEL, csm_model=CSM_MODEL, max_queue=16) -> gr.Blocks:
    """The Blocks app. Engine events share one queue slot ("engine"), since they share the CPU and MLX's
    random state; `max_queue` bounds how many requests may wait (the page shows each its place in line)."""
    engine = engine or Engine()
    building = ext.prepare_in_background() is not None  # compiles while the models load and visitors arrive
    # An hour's outputs are kept in Gradio's cache; the rest is deleted every 10 minutes and all at shutdown.
    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}\n\n{mode_markdown(engine.policy)}", elem_id="studio-mode")
        if building:
            status = gr.Markdown(kernels_status, elem_id="kernels-status")
            poll = gr.Timer(1.0)
            poll.tick(lambda: (kernels_status(), gr.Timer(active=not ext.ready())), None, [status, poll],
                      queue=False, show_progress="hidden", api_visibility="private")
        with gr.Tabs():
            kokoro_tab.build(engine, kokoro_model)
            csm_tab.build(engine, csm_model)
            quant_tab.build(engine, kokoro_model)
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    return demo


def launch(demo: gr.Blocks, host=None, port=None, share=False, **kwargs):
    """Serve the studio; its named endpoints are MCP tools too, at /gradio_api/mcp/."""
    # Gradio serves only its own cache and uploads; the model cache is blocked as well, whatever sits around it.
    return demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True, css=CSS,
                       theme=gr.themes.Soft(), max_file_size=MAX_FILE_SIZE, blocked_paths=[str(cache_dir())],
                       mcp_server=True, **kwargs)
