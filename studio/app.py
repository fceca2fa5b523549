"""The studio: one Gradio Blocks app with the Kokoro, CSM voice-cloning and quantization-workbench tabs."""

import gradio as gr

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


def build_app(engine: Engine = None, kokoro_model=DEFAULT_MODEL, csm_model=CSM_MODEL, max_queue=16) -> gr.Blocks:
    """The Blocks app. Engine events share one queue slot ("engine"), since they share the CPU and MLX's
    random state; `max_queue` bounds how many requests may wait."""
    engine = engine or Engine()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            kokoro_tab.build(engine, kokoro_model)
            csm_tab.build(engine, csm_model)
            quant_tab.build(engine, kokoro_model)
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    return demo


def launch(demo: gr.Blocks, host=None, port=None, share=False, **kwargs):
    """Serve the studio; its named endpoints are MCP tools too, at /gradio_api/mcp/."""
    return demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True, css=CSS,
                       theme=gr.themes.Soft(), mcp_server=True, **kwargs)
