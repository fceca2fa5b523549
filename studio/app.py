"""The studio: one Gradio Blocks app with the Kokoro, CSM voice-cloning and quantization-workbench tabs."""

import gradio as gr

from mlx_tts import ext
from mlx_tts.utils import DEFAULT_MODEL

from . import csm_tab, kokoro_tab, quant_tab
from .engine import CSM_MODEL, Engine

TITLE = "mlx-tts studio"
INTRO = (
    "Text to speech in MLX: **Kokoro-82M** with preset voices, **Sesame CSM-1B** voice cloning, and a "
    "workbench that measures what quantization costs. Every button is also an API endpoint "
    "(see *Use via API* at the bottom of the page)."
)
CSS = "#kokoro-stats, #csm-status {min-height: 2em}"
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
    random state; `max_queue` bounds how many requests may wait."""
    engine = engine or Engine()
    building = ext.prepare_in_background() is not None  # compiles while the models load and visitors arrive
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
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
    return demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True, css=CSS,
                       theme=gr.themes.Soft(), **kwargs)
