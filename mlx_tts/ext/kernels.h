// Native CPU kernels for mlx_tts: MLX operations whose primitives run their own CPU code.

#pragma once

#include <optional>

#include "mlx/array.h"

namespace mlx_tts {

namespace mx = mlx::core;

// 1-D convolution, groups=1, float32, MLX layout: x [B, T, C_in], weight [C_out, K, C_in], bias [C_out];
// `residual` (the output's shape) is added to the output, in place when nothing else holds it. With gamma
// and beta ([B, C_in]) the input goes through adain_snake(x, gamma, beta, alpha, eps) first (Snake alone
// with only alpha), applied as the convolution reads it.
mx::array conv1d(const mx::array& x, const mx::array& weight, const std::optional<mx::array>& bias, int stride,
                 int padding, int dilation, const std::optional<mx::array>& residual,
                 const std::optional<mx::array>& gamma, const std::optional<mx::array>& beta,
                 const std::optional<mx::array>& alpha, float eps);

// 1-D transposed convolution, groups=1, float32: x [B, T, C_in], weight [C_out, K, C_in] (MLX's layout).
mx::array conv_transpose1d(const mx::array& x, const mx::array& weight, const std::optional<mx::array>& bias,
                           int stride, int padding, int output_padding);

// Snake activation x + sin(alpha * x)^2 / alpha, float32, alpha [C] over the last axis of x.
mx::array snake(const mx::array& x, const mx::array& alpha);

// Kokoro's AdaIN, (x - mean_T) / sqrt(var_T + eps) * (1 + gamma) + beta over x [B, T, C] with gamma and
// beta [B, C] (or [B, 1, C]), then Snake with alpha [C] when given. float32.
mx::array adain_snake(const mx::array& x, const mx::array& gamma, const mx::array& beta,
                      const std::optional<mx::array>& alpha, float eps);

// Softmax over the last axis, float32.
mx::array softmax(const mx::array& x);

// GELU with the tanh approximation (Hugging Face's "gelu_new"), float32.
mx::array gelu_tanh(const mx::array& x);

// sin, cos (absolute error < 1e-7 for any argument) and exp (within 2 ulp; inputs clamped to [-87.3, 88.3]),
// float32.
mx::array sin(const mx::array& x);
mx::array cos(const mx::array& x);
mx::array exp(const mx::array& x);

// An LSTM's recurrence over precomputed input gates: gates_x [D, T, B, 4H] (D independent directions, each in
// its own time order, PyTorch's gate order i, f, g, o) and w_hh_t [D, H, 4H] (W_hh transposed) -> the hidden
// states [D, T, B, H], starting from zero states. float32.
mx::array lstm_recurrence(const mx::array& gates_x, const mx::array& w_hh_t);

// x [rows <= 8, K] @ W^T for W [N, K] affine-quantized as MLX stores it (weight [N, K * bits / 32] uint32,
// scales and biases [N, K / group_size]), 2, 3, 4, 5, 6 or 8 bits, group size 32, 64 or 128, float32 -> [rows, N].
mx::array quantized_matvec(const mx::array& x, const mx::array& weight, const mx::array& scales,
                           const mx::array& biases, int group_size, int bits);

// x [rows <= 8, K] float32 @ W^T for W [N, K] bfloat16 -> [rows, N] float32.
mx::array bfloat16_matvec(const mx::array& x, const mx::array& weight);

// mx.dequantize for the affine mode at 2-6 or 8 bits with float32 scales, bit-identical, SIMD and multithreaded:
// weight [N, K * bits / 32] uint32, scales and biases [N, K / group_size] -> [N, K] float32.
mx::array dequantize(const mx::array& weight, const mx::array& scales, const mx::array& biases, int group_size,
                     int bits);

}  // namespace mlx_tts
