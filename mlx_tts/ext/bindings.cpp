// Python bindings of the CPU kernels. Built in MLX's nanobind domain so that mlx.core.array passes through.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include "kernels.h"
#include "simd.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_cpu_kernels, m) {
  m.attr("uses_avx512") = mlx_tts::cpu_has_avx512();  // false in portable builds and on CPUs without it
  // The AVX2 quantized matrix-vector kernel: on AVX2 CPUs without AVX-512, or held there by MLX_TTS_EXT=avx2
  m.attr("uses_avx2") = !mlx_tts::cpu_has_avx512() && mlx_tts::cpu_has_avx2_fma();
  m.def("conv1d", &mlx_tts::conv1d, "x"_a, "weight"_a, "bias"_a.none(), "stride"_a, "padding"_a, "dilation"_a,
        "residual"_a.none() = nb::none(), "gamma"_a.none() = nb::none(), "beta"_a.none() = nb::none(),
        "alpha"_a.none() = nb::none(), "eps"_a = 1e-5f,
        "1-D convolution (groups=1, float32) on the CPU stream, plus `residual` (the output's shape) if given; "
        "with gamma, beta ([B, C_in]) and/or alpha ([C_in]) of the input after AdaIN and/or Snake.");
  m.def("conv_transpose1d", &mlx_tts::conv_transpose1d, "x"_a, "weight"_a, "bias"_a.none(), "stride"_a,
        "padding"_a, "output_padding"_a,
        "1-D transposed convolution (groups=1, float32) on the CPU stream as one strided GEMM per kernel tap.");
  m.def("snake", &mlx_tts::snake, "x"_a, "alpha"_a,
        "Snake activation x + sin(alpha * x)^2 / alpha (float32, alpha over the last axis) on the CPU stream.");
  m.def("adain_snake", &mlx_tts::adain_snake, "x"_a, "gamma"_a, "beta"_a, "alpha"_a.none(), "eps"_a,
        "Instance norm over T with scale (1 + gamma) and shift beta, then Snake when alpha is given (float32).");
  m.def("softmax", &mlx_tts::softmax, "x"_a, "Softmax over the last axis (float32) on the CPU stream.");
  m.def("sin", &mlx_tts::sin, "x"_a, "sin (float32) on the CPU stream, vectorized.");
  m.def("cos", &mlx_tts::cos, "x"_a, "cos (float32) on the CPU stream, vectorized.");
  m.def("exp", &mlx_tts::exp, "x"_a, "exp (float32; inputs clamped to [-87.3, 88.3]) on the CPU stream, vectorized.");
  m.def("gelu_tanh", &mlx_tts::gelu_tanh, "x"_a, "GELU, tanh approximation (float32) on the CPU stream.");
  m.def("lstm_recurrence", &mlx_tts::lstm_recurrence, "gates_x"_a, "w_hh_t"_a,
        "LSTM recurrence over precomputed input gates [D, T, B, 4H] with W_hh^T [D, H, 4H] -> h [D, T, B, H].");
  m.def("quantized_matvec", &mlx_tts::quantized_matvec, "x"_a, "weight"_a, "scales"_a, "biases"_a, "group_size"_a,
        "bits"_a, "x [rows <= 8, K] times an affine-quantized [N, K] matrix, transposed (2-6 or 8 bits, float32).");
  m.def("bfloat16_matvec", &mlx_tts::bfloat16_matvec, "x"_a, "weight"_a,
        "x [rows <= 8, K] float32 times a bfloat16 [N, K] matrix, transposed -> float32.");
  m.def("dequantize", &mlx_tts::dequantize, "weight"_a, "scales"_a, "biases"_a, "group_size"_a, "bits"_a,
        "mx.dequantize (affine, 2-6 or 8 bits, float32 scales) on the CPU stream, SIMD and multithreaded.");
}
