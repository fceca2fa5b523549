// Kokoro's AdaIN and Snake as row operations, shared by the AdaIN/Snake primitive and the convolutions that
// apply them to their input as they read it.

#pragma once

#include <vector>

namespace mlx_tts {

// Per-channel y = snake(x * scale + shift) (or just the affine without alpha) over rows of a [rows, C] matrix.
struct ChannelTransform {
  std::vector<float> scale, shift, alpha, inv_alpha;  // [C] each; alpha empty: no Snake

  // The AdaIN of x [rows, C] (statistics over the rows, multithreaded) with gamma, beta [C], then Snake
  // with alpha [C] when not null.
  static ChannelTransform adain(const float* x, int rows, int channels, const float* gamma, const float* beta,
                                float eps, const float* alpha);
  // Snake alone.
  static ChannelTransform snake(int channels, const float* alpha);

  // Rows [0, rows) of x into y (both [rows, C]); single-threaded.
  void apply(const float* x, float* y, size_t rows) const;
};

}  // namespace mlx_tts
