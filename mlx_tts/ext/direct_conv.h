// A direct (register-blocked) conv1d kernel for AVX-512 CPUs, used by conv.cpp for long inputs.

#pragma once

#include <vector>

namespace mlx_tts {

struct ConvShape {
  int batch, t_in, c_in, t_out, c_out, kernel, stride, padding, dilation;
};

// Whether this CPU can run the direct kernel (AVX-512F).
bool direct_conv_available();

// Weights [C_out, K, C_in] -> panels of 64 output channels, laid out [panel][k * C_in + i][64], the last
// panel zero-padded: the kernel streams one panel row per input channel and tap.
std::vector<float> pack_conv_weights(const ConvShape& s, const float* w);

// Output rows [r0, r1) of one batch item (x: [t_in, c_in], y: [t_out, c_out]): every tap of a 6-row x
// 64-channel tile accumulates in registers and the tile is written once, bias included.
void direct_conv_rows(const ConvShape& s, const float* x, const float* packed, const float* bias, float* y, int r0,
                      int r1);

}  // namespace mlx_tts
