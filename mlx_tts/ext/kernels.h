// Native CPU kernels for mlx_tts: MLX operations whose primitives run their own CPU code.

#pragma once

#include <optional>

#include "mlx/array.h"

namespace mlx_tts {

namespace mx = mlx::core;

// 1-D convolution, groups=1, float32, MLX layout: x [B, T, C_in], weight [C_out, K, C_in], bias [C_out].
mx::array conv1d(const mx::array& x, const mx::array& weight, const std::optional<mx::array>& bias, int stride,
                 int padding, int dilation);

// 1-D transposed convolution, groups=1, float32: x [B, T, C_in], weight [C_out, K, C_in] (MLX's layout).
mx::array conv_transpose1d(const mx::array& x, const mx::array& weight, const std::optional<mx::array>& bias,
                           int stride, int padding, int output_padding);

// Snake activation x + sin(alpha * x)^2 / alpha, float32, alpha [C] over the last axis of x.
mx::array snake(const mx::array& x, const mx::array& alpha);

// Kokoro's AdaIN, (x - mean_T) / sqrt(var_T + eps) * (1 + gamma) + beta over x [B, T, C] with gamma and
// beta [B, C] (or [B, 1, C]), then Snake with alpha [C] when given. float32.
mx::array adain_snake(const mx::array& x, const mx::array& gamma, const mx::array& beta,
                      const std::optional<mx::array>& alpha, float eps);

}  // namespace mlx_tts
