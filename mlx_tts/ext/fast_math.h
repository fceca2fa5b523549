// Vectorizable float32 exp, sigmoid, tanh and sine for the CPU kernels.
//
// MLX's CPU exp, tanh, sigmoid and sin are scalar library calls (~9-40 ns per element here): a softmax over
// ALBERT's attention scores or one GELU of its feed-forward layer took longer than the matmuls around it.
// These are branch-free, so loops over them compile to SIMD code. exp is Cephes' expf (range reduction by
// ln 2 in two parts, degree-6 polynomial): within 2 ulp of the correctly rounded value over its range.
// sin reduces its argument by pi in double (exact enough for the |x| ~ 1e6 phases of Kokoro's harmonic
// source), then a degree-11 odd polynomial on [-pi/2, pi/2]: absolute error < 1e-7.

#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace mlx_tts {

// exp(x) for x in [kExpMin, kExpMax]; inputs outside are clamped there (exp(-87.3) ~ 1.2e-38 stands in for
// smaller results, which only ever meet a sum or a 1 + ... here).
constexpr float kExpMin = -87.3f, kExpMax = 88.3f;

inline __attribute__((always_inline)) float fast_exp(float x) {
  x = std::min(std::max(x, kExpMin), kExpMax);
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer, in SIMD.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

inline __attribute__((always_inline)) float fast_sigmoid(float x) {
  return 1.0f / (1.0f + fast_exp(-x));
}

// 2 * sigmoid(2x) - 1: absolute error ~1e-7, which is all an LSTM's gates need.
inline __attribute__((always_inline)) float fast_tanh(float x) {
  return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f;
}

constexpr double kPi = 3.14159265358979323846;
// Adding and subtracting 1.5 * 2^52 rounds a double to the nearest integer (for |v| < 2^51), in SIMD; the
// sum's lowest mantissa bit is then that integer's parity.
constexpr double kRoundMagic = 6755399441055744.0;

// sin(u) for u in [-pi/2, pi/2].
inline __attribute__((always_inline)) float sin_reduced(float u) {
  const float u2 = u * u;
  return u * (1.0f + u2 * (-1.6666667e-1f +
                           u2 * (8.3333333e-3f + u2 * (-1.9841270e-4f + u2 * (2.7557319e-6f + u2 * -2.5052108e-8f)))));
}

// sin(t) for any double t: t = k pi + u, sin(t) = (-1)^k sin(u).
inline __attribute__((always_inline)) float fast_sin(double t) {
  const double shifted = t * (1.0 / kPi) + kRoundMagic;
  const double k = shifted - kRoundMagic;
  const float s = sin_reduced(static_cast<float>(t - k * kPi));
  const uint32_t odd = static_cast<uint32_t>(std::bit_cast<uint64_t>(shifted) & 1);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(s) ^ (odd << 31));
}

}  // namespace mlx_tts
