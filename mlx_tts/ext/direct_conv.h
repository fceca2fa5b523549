// A direct (register-blocked) convolution kernel for AVX-512 CPUs, used by conv.cpp for long inputs. Only x86
// builds have it (MLX_TTS_X86, simd.h); ConvShape is the convolutions' shape everywhere.

#pragma once

#include <cstddef>
#include <vector>

#include "simd.h"

namespace mlx_tts {

struct ConvShape {
  int batch, t_in, c_in, t_out, c_out, kernel, stride, padding, dilation;
};

#if MLX_TTS_X86

// Output rows per register tile of the direct kernel.
constexpr int kDirectTileRows = 6;

// A family of output rows that share their taps. Row u of the family is output row y_first + u * y_step
// and sums, over tap j < taps, input row x_first + u * x_step + j * x_tap_step times the j-th packed tap.
// conv1d is one family: output row u reads input row u * stride - padding + j * dilation. A transposed
// convolution is one family per phase (output row modulo stride), each a convolution with a subset of the
// taps, walking back through the input.
struct TapFamily {
  int x_first, x_step, x_tap_step, taps;
  long y_first, y_step;
};

// Floats that pack_taps writes for `taps` taps.
size_t packed_size(const ConvShape& s, int taps);

// Output channels [o0, o1) of taps tap_first + j * tap_stride (j < taps) of weights [C_out, K, C_in] into
// panels of 64 output channels, laid out [panel][j * C_in + i][64]; `packed` starts zeroed (the padding).
void pack_taps(const ConvShape& s, const float* w, int tap_first, int tap_stride, int taps, int o0, int o1,
               float* packed);

// Family rows [u0, u1) of one batch item (x: [t_in, c_in], y: [t_out, c_out]): 6-row x 64-channel tiles
// accumulate every tap in registers and are written once, bias and residual (laid out as y, may be y
// itself, or null) included.
void direct_rows(const ConvShape& s, const TapFamily& family, const float* x, const float* packed, const float* bias,
                 const float* residual, float* y, int u0, int u1);

#endif  // MLX_TTS_X86

}  // namespace mlx_tts
