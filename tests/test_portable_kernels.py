"""The portable build of the native kernels (`MLX_TTS_EXT=portable`: without their x86 code paths, as on
aarch64 or macOS) held to the same references and tolerances as the default build: the kernel tests of
test_native_kernels.py and test_conv.py, run again in a process that loads the portable build. Likewise the
AVX2 paths (`MLX_TTS_EXT=avx2`), which an AVX-512 CPU would otherwise never take."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_native_kernels import cpu_flags

ROOT = Path(__file__).resolve().parents[1]

PORTABLE_TESTS = [
    "tests/test_native_kernels.py",  # includes the check that the portable build runs no AVX-512 code
    "tests/test_conv.py::test_kokoro_shapes_every_path",
    "tests/test_conv.py::test_random_small_shapes",
    # Lengths at which the default build takes its direct kernel: the per-tap GEMM path in the portable one.
    "tests/test_conv.py::test_direct_kernel_long_inputs",
    "tests/test_conv.py::test_direct_kernel_long_transposed",
    "tests/test_conv.py::test_kernel_splits_long_inputs_over_threads",
    "tests/test_conv.py::test_snake_kernel_matches_float64",
    "tests/test_conv.py::test_adain_snake_kernel_matches_mlx",
    # The two shorter fused cases: the longer ones take the same path in the portable build, 50 s more.
    "tests/test_conv.py::test_conv_with_input_adain_and_residual[T600 C64 k7 d1 B1]",
    "tests/test_conv.py::test_conv_with_input_adain_and_residual[T100 C128 k3 d1 B2]",
    "tests/test_conv.py::test_conv_takes_strided_and_broadcast_inputs",
    "tests/test_conv.py::test_residual_output_reuses_the_residual_buffer",
]


def run_kernel_tests(setting: str, tests: list):
    env = {**os.environ, "MLX_TTS_EXT": setting}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not reference", *tests]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary


def test_portable_build_passes_the_kernel_tests(kernel):  # `kernel`: skips where no compiler can build either
    run_kernel_tests("portable", PORTABLE_TESTS)


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="the CPU has no AVX2 and FMA (or is not x86 Linux)")
def test_avx2_paths_pass_the_kernel_tests(kernel):
    """The build checks itself (test_build_runs_the_avx512_kernels_where_it_should): these run the AVX2 ones."""
    run_kernel_tests("avx2", ["tests/test_native_kernels.py"])
