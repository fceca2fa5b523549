"""Build (or find in the cache) the native CPU kernels and the BLAS shim ahead of first use, and report them:

    python -m mlx_tts.ext build

The studio and the first generation would otherwise compile the kernels on first use (about a minute).
Exits with 1 when the kernels are enabled but could not be built (the log says why; MLX ops are used then).
"""

import argparse
import logging
import sys

import mlx_tts


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlx_tts.ext", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="build", choices=["build"],
                   help="build the kernels into the cache (the default)")
    p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = mlx_tts.accelerate()  # builds the BLAS shim (before mlx.core, which the kernels' build imports)
    print(f"MLX CPU BLAS: {report.blas or 'the bundled BLAS of the MLX wheel'} ({report.blas_note})")
    from mlx_tts import ext

    if not ext.enabled():
        print("native CPU kernels: off (MLX_TTS_EXT=off)")
        return
    kernels = ext.cpu_kernels()
    print(f"native CPU kernels: {kernels.__file__ if kernels else 'unavailable (MLX ops are used)'}")
    if kernels is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
