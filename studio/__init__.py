"""The Gradio studio over `mlx_tts`: `build_app()` returns the Blocks app; `python app.py` serves it."""

from .app import build_app, launch

__all__ = ["build_app", "launch"]
