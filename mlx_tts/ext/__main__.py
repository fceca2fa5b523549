"""Build (or find in the cache) the native CPU kernels and the BLAS shim ahead of first use, and report them:

    python -m mlx_tts.ext
"""

from mlx_tts import cpu_blas, ext

print(f"MLX CPU BLAS: {cpu_blas.active() or 'the reference BLAS of the mlx-cpu wheel'}")
kernels = ext.cpu_kernels()
print(f"native CPU kernels: {kernels.__file__ if kernels else 'unavailable (MLX ops are used)'}")
