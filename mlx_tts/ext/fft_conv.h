// conv1d (stride 1, any dilation) as an overlap-save FFT convolution: for long kernels it needs a fraction of
// the multiply-adds of one GEMM per tap, and it is exact up to float32 rounding.

#pragma once

#include "direct_conv.h"
#include "norm_snake.h"

namespace mlx_tts {

// Whether fft_conv1d is the faster way to compute a convolution of shape `s` (measured on AVX2 CPUs; the
// AVX-512 direct kernel keeps its own choice).
bool fft_conv_pays(const ConvShape& s);

// Output rows [0, t_out) of one batch item: x [t_in, c_in], read through `transform` (AdaIN and Snake) when not
// null; w [C_out, K, C_in]; bias [C_out] or null; residual laid out as y (may be y itself) or null.
void fft_conv1d(const ConvShape& s, const float* x, const ChannelTransform* transform, const float* w,
                const float* bias, const float* residual, float* y);

}  // namespace mlx_tts
