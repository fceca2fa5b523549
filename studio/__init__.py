"""The Gradio studio over `mlx_tts`: `build_app()` returns the Blocks app; `python app.py` serves it."""

__all__ = ["build_app", "launch"]


def __getattr__(name):
    # Gradio loads on first use, so that `studio.policy` works without it and app.py can point Gradio's
    # temp dir (read when Gradio is imported) into this run's work area first.
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
