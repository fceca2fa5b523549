// Direct convolution: out[t, o] = bias[o] + sum over taps and input channels of x * w, for a family of
// output rows that share their taps (see TapFamily).
//
// A tile of 6 output rows x 64 output channels (24 AVX-512 accumulators) sums over every tap and input
// channel in registers: per step, 4 vector loads of the packed weights and 6 broadcasts of x, 24 FMAs.
// x is read in place (rows at a fixed stride), so unlike a BLAS call per tap there is no packing of the
// input and the output is stored once instead of once per tap. Tiles whose rows reach past either end of
// the input read a zero-padded copy of just the rows they need.
// x86 builds only (see simd.h): elsewhere conv.cpp runs its per-tap GEMM path for every input.

#include "direct_conv.h"

#if MLX_TTS_X86

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace mlx_tts {

namespace {

constexpr int kRows = kDirectTileRows;
constexpr int kPanel = 64;         // output channels per packed weight panel (4 vectors of 16)
constexpr int kVector = 16;

// Accumulates one tile: ROWS output rows (a[r * row_step] is row r's first tap), VECS x 16 channels.
template <int ROWS, int VECS>
MLX_TTS_AVX512 void tile(const float* a, long row_step, long tap_step, int taps, int c_in, const float* panel,
                         const float* bias, const float* residual, int valid, float* y, long ldy) {
  __m512 acc[ROWS][VECS];
  for (int v = 0; v < VECS; ++v) {
    const int left = valid - v * kVector;
    const __mmask16 mask = left >= kVector ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    const __m512 init = bias ? _mm512_maskz_loadu_ps(mask, bias + v * kVector) : _mm512_setzero_ps();
    for (int r = 0; r < ROWS; ++r) {
      acc[r][v] = residual ? _mm512_add_ps(init, _mm512_maskz_loadu_ps(mask, residual + r * ldy + v * kVector))
                           : init;
    }
  }
  const float* b = panel;
  for (int k = 0; k < taps; ++k) {
    const float* ak = a + k * tap_step;
    for (int i = 0; i < c_in; ++i, b += kPanel) {
      __m512 bv[VECS];
      for (int v = 0; v < VECS; ++v) {
        bv[v] = _mm512_loadu_ps(b + v * kVector);
      }
      for (int r = 0; r < ROWS; ++r) {
        const __m512 av = _mm512_set1_ps(ak[r * row_step + i]);
        for (int v = 0; v < VECS; ++v) {
          acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
      }
    }
  }
  for (int v = 0; v < VECS; ++v) {
    const int left = valid - v * kVector;
    const __mmask16 mask = left >= kVector ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    for (int r = 0; r < ROWS; ++r) {
      _mm512_mask_storeu_ps(y + r * ldy + v * kVector, mask, acc[r][v]);
    }
  }
}

using TileFn = void (*)(const float*, long, long, int, int, const float*, const float*, const float*, int, float*,
                        long);

template <int ROWS>
TileFn tile_for_vectors(int vecs) {
  switch (vecs) {
    case 1: return tile<ROWS, 1>;
    case 2: return tile<ROWS, 2>;
    case 3: return tile<ROWS, 3>;
    default: return tile<ROWS, 4>;
  }
}

TileFn tile_for(int rows, int vecs) {
  switch (rows) {
    case 1: return tile_for_vectors<1>(vecs);
    case 2: return tile_for_vectors<2>(vecs);
    case 3: return tile_for_vectors<3>(vecs);
    case 4: return tile_for_vectors<4>(vecs);
    case 5: return tile_for_vectors<5>(vecs);
    default: return tile_for_vectors<6>(vecs);
  }
}

}  // namespace

size_t packed_size(const ConvShape& s, int taps) {
  const size_t panels = (s.c_out + kPanel - 1) / kPanel;
  return panels * taps * s.c_in * kPanel;
}

void pack_taps(const ConvShape& s, const float* w, int tap_first, int tap_stride, int taps, int o0, int o1,
               float* packed) {
  const size_t depth = static_cast<size_t>(taps) * s.c_in;
  for (int o = o0; o < o1; ++o) {
    float* column = packed + (o / kPanel) * depth * kPanel + o % kPanel;
    for (int j = 0; j < taps; ++j) {
      const float* wk = w + (static_cast<size_t>(o) * s.kernel + tap_first + j * tap_stride) * s.c_in;
      for (int i = 0; i < s.c_in; ++i) {
        column[(static_cast<size_t>(j) * s.c_in + i) * kPanel] = wk[i];
      }
    }
  }
}

void direct_rows(const ConvShape& s, const TapFamily& f, const float* x, const float* packed, const float* bias,
                 const float* residual, float* y, int u0, int u1) {
  const long row_step = static_cast<long>(f.x_step) * s.c_in;
  const long tap_step = static_cast<long>(f.x_tap_step) * s.c_in;
  const size_t depth = static_cast<size_t>(f.taps) * s.c_in;
  const int panels = (s.c_out + kPanel - 1) / kPanel;
  const int tap_reach = (f.taps - 1) * f.x_tap_step;  // input rows from tap 0 to the last tap (may be < 0)
  std::vector<float> padded;  // zero-padded input rows for tiles that reach past either end of x
  // Panels outside: one panel (depth x 64 floats) stays in L2 while the tiles of these rows stream by.
  for (int p = 0; p < panels; ++p) {
    const int valid = std::min(kPanel, s.c_out - p * kPanel);
    const int vecs = (valid + kVector - 1) / kVector;
    const float* panel = packed + p * depth * kPanel;
    for (int u = u0; u < u1; u += kRows) {
      const int rows = std::min(kRows, u1 - u);
      const int start = f.x_first + u * f.x_step;  // input row of this tile's first row and first tap
      const int lo = start + std::min(0, tap_reach);
      const int hi = start + (rows - 1) * f.x_step + std::max(0, tap_reach);
      const float* a = x + static_cast<long>(start) * s.c_in;
      if (lo < 0 || hi >= s.t_in) {
        padded.assign(static_cast<size_t>(hi - lo + 1) * s.c_in, 0.0f);
        const int copy_lo = std::max(lo, 0), copy_hi = std::min(hi, s.t_in - 1);
        if (copy_hi >= copy_lo) {
          std::memcpy(padded.data() + static_cast<size_t>(copy_lo - lo) * s.c_in,
                      x + static_cast<size_t>(copy_lo) * s.c_in,
                      static_cast<size_t>(copy_hi - copy_lo + 1) * s.c_in * sizeof(float));
        }
        a = padded.data() + static_cast<size_t>(start - lo) * s.c_in;
      }
      const long y_offset = f.y_first + u * f.y_step + p * kPanel;
      tile_for(rows, vecs)(a, row_step, tap_step, f.taps, s.c_in, panel, bias ? bias + p * kPanel : nullptr,
                           residual ? residual + y_offset : nullptr, valid, y + y_offset, f.y_step);
    }
  }
}

}  // namespace mlx_tts

#endif  // MLX_TTS_X86
