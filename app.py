"""Start the studio: `python app.py` (a Hugging Face Space runs this file too).

Host, port and sharing come from flags, or from Gradio's own environment variables (GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT, GRADIO_SHARE); the models from MLX_TTS_MODEL and MLX_TTS_CSM_MODEL. The same server answers
OpenAI's speech API under /v1 (studio/openai_api.py); MLX_TTS_API_KEY (or --api-key) makes it ask for a key.
"""

import argparse
import logging
import os

from mlx_tts.utils import DEFAULT_MODEL
from studio import build_app, launch, openai_api
from studio.engine import CSM_MODEL, Engine


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
    p.add_argument("--api-key", default=env("MLX_TTS_API_KEY"),
                   help="bearer key the OpenAI-compatible API (/v1) asks for; none: open")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    engine = Engine()
    demo = build_app(engine, kokoro_model=args.model, csm_model=args.csm_model, max_queue=args.max_queue)
    api = openai_api.app_kwargs(engine, openai_api.ApiSettings.from_config(args))
    launch(demo, host=args.host, port=args.port, share=args.share, app_kwargs=api)
