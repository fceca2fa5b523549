"""Start the studio: `python app.py` (a Hugging Face Space runs this file too).

Host, port and sharing come from flags, or from Gradio's own environment variables (GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT, GRADIO_SHARE); the models from MLX_TTS_MODEL and MLX_TTS_CSM_MODEL. The mode is `public`
on a Space (SPACE_ID is set) or with --public, `lab` otherwise (see studio/policy.py). The same server answers
OpenAI's speech API under /v1 (studio/openai_api.py); MLX_TTS_API_KEY (or --api-key) makes it ask for a key.
"""

import argparse
import logging
import os
import signal
import sys

import mlx_tts

mlx_tts.accelerate()  # first: before anything imports mlx.core

from mlx_tts.utils import DEFAULT_MODEL  # noqa: E402
from studio.policy import CSM_MODEL, Policy, WorkArea, allowed_models_from_env, default_mode  # noqa: E402  (no Gradio yet)


def parse_args(argv=None):
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on")
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")), help="port to listen on")
    p.add_argument("--share", action="store_true", default=env("GRADIO_SHARE", "").lower() in ("1", "true"),
                   help="also serve on a public gradio.live link")
    p.add_argument("--model", default=env("MLX_TTS_MODEL", DEFAULT_MODEL), help="Kokoro model: repo id or folder")
    p.add_argument("--csm-model", default=env("MLX_TTS_CSM_MODEL", CSM_MODEL), help="CSM model: repo id or folder")
    p.add_argument("--max-queue", type=int, default=int(env("MLX_TTS_MAX_QUEUE", "16")),
                   help="most requests waiting in the queue")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--public", dest="mode", action="store_const", const="public",
                      help="public mode: models from the allowlist only, nothing saved on the server "
                           "(the default when SPACE_ID is set)")
    mode.add_argument("--lab", dest="mode", action="store_const", const="lab", help="lab mode (the local default)")
    p.add_argument("--allow-model", action="append", default=[], metavar="ID",
                   help="public mode: offer this model too (repeatable; also MLX_TTS_ALLOWED_MODELS=a,b)")
    p.add_argument("--output-dir", default=env("MLX_TTS_OUTPUT_DIR", "studio-output"),
                   help="lab mode: the only folder the studio writes models into")
    p.add_argument("--model-dir", action="append", default=[], metavar="FOLDER",
                   help="lab mode: also load model folders from here (repeatable)")
    p.add_argument("--api-key", default=env("MLX_TTS_API_KEY"),
                   help="bearer key the OpenAI-compatible API (/v1) asks for; none: open")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    work = WorkArea()  # deletes the folders of earlier runs that are gone; this one's at exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain `kill` is an exit too (atexit runs)
    # Gradio reads its temp dir when it is imported: point it into this run's folder unless one is given.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work.path / "gradio"))
    from studio import build_app, launch, openai_api
    from studio.engine import Engine

    policy = Policy(
        mode=args.mode or default_mode(),
        allowed_models=[args.model, args.csm_model, *args.allow_model, *allowed_models_from_env()],
        output_root=args.output_dir,
        model_roots=args.model_dir,
        upload_root=os.environ["GRADIO_TEMP_DIR"],
    )
    logging.getLogger("mlx_tts.studio").info("studio: %s mode, work folder %s", policy.mode, work.path)
    engine = Engine(work_dir=work.path / "work", policy=policy)
    demo = build_app(engine, kokoro_model=args.model, csm_model=args.csm_model, max_queue=args.max_queue)
    api = openai_api.app_kwargs(engine, openai_api.ApiSettings.from_config(args, policy))
    launch(demo, host=args.host, port=args.port, share=args.share, app_kwargs=api)


if __name__ == "__main__":
    main()
