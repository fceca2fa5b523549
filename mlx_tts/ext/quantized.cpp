// Affine-quantized weights in MLX's layout (weight [N, K * bits / 32] uint32, scales and biases
// [N, K / group_size]) on the CPU, at 2, 3, 4, 5, 6 and 8 bits. MLX packs every width the same way: value j of
// a row sits at bits [j * bits, (j + 1) * bits) of the row's bytes, least significant bit first.
//
// quantized_matvec: a few activation rows times the matrix, for the token-by-token steps of CSM's backbone
// and depth decoder:
//   y[m, n] = sum over groups g of  scale[n, g] * sum_{k in g} q[n, k] x[m, k]  +  bias[n, g] * sum_{k in g} x[m, k]
// A step reads every weight once, so it is bound by memory: 4-bit weights are an eighth of float32's bytes.
// MLX's CPU quantized matmul unpacks value by value (a 4-bit step ran ~3x slower than float32 through BLAS);
// here 16 bytes at a time are widened to 16 lanes (4-bit: low nibbles are the even columns, high nibbles the
// odd ones, so x is reordered to match once per call), converted and multiplied in AVX-512 registers (or 8
// bytes at a time in AVX2 registers). The other widths take 8 values (`bits` bytes) a step in AVX2 registers:
// one byte shuffle gives each lane the 32-bit word its value starts in, one variable shift and a mask the value.
//
// bfloat16_matvec: the same for a bfloat16 matrix (CSM's checkpoints are bfloat16): widened to float32 in
// registers, half float32's bytes; MLX's CPU bfloat16 matmul is ~3x slower than float32.
// Both have an AVX-512 version and a portable one in plain loops (compiled to AVX2 code where the CPU has it;
// see simd.h); quantized_matvec also has an AVX2 + FMA version (its 4-bit unpacking does not vectorize by
// itself).
//
// dequantize: the float matrix, for products over many positions (then one BLAS GEMM) and for the quantized
// convolutions and LSTMs of Kokoro, which dequantize at every call. MLX's own is single-threaded MLX ops.

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>
#include <vector>

#include "fast_math.h"
#include "cpu_primitive.h"
#include "kernels.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"
#include "simd.h"

#if MLX_TTS_X86
#include <immintrin.h>
#endif

namespace mlx_tts {

namespace {

// Output rows per chunk of work: a chunk reads ~rows * K * bits / 8 bytes of weights.
constexpr int kMinRowsPerChunk = 16, kMaxRowsPerChunk = 128;
// The most activation rows a call takes: each row re-reads the unpacked weights from registers.
constexpr int kMaxRows = 8;

struct QuantizedShape {
  int rows, k, n, group_size, bits;
  int groups() const { return k / group_size; }
};

// sum term(i) over i < n, for the portable kernels: in 16 independent partial sums, which compilers vectorize at
// any SIMD width (a single running sum is a chain they may not reorder).
template <typename Term>
inline __attribute__((always_inline)) float lane_sum(int n, Term term) {
  constexpr int kLanes = 16;
  float part[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      part[l] += term(i + l);
    }
  }
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) {
    sum += part[l];
  }
  for (; i < n; ++i) {
    sum += term(i);
  }
  return sum;
}

// Value j of a packed row (any width up to 8 bits; reads only the bytes the value spans).
inline __attribute__((always_inline)) uint32_t packed_value(const uint8_t* row, int j, int bits) {
  const int bit = j * bits, byte = bit >> 3, offset = bit & 7;
  uint32_t word = row[byte];
  if (offset + bits > 8) {
    word |= static_cast<uint32_t>(row[byte + 1]) << 8;
  }
  return (word >> offset) & ((1u << bits) - 1);
}

#if MLX_TTS_X86

// x reordered for the 4-bit kernel: within each block of 32 columns, the 16 even columns then the 16 odd ones.
std::vector<float> split_even_odd(const float* x, int rows, int k) {
  std::vector<float> out(static_cast<size_t>(rows) * k);
  for (int m = 0; m < rows; ++m) {
    for (int b = 0; b < k; b += 32) {
      for (int j = 0; j < 16; ++j) {
        out[static_cast<size_t>(m) * k + b + j] = x[static_cast<size_t>(m) * k + b + 2 * j];
        out[static_cast<size_t>(m) * k + b + 16 + j] = x[static_cast<size_t>(m) * k + b + 2 * j + 1];
      }
    }
  }
  return out;
}

// Row n of the weights times one row of x, group by group: within a group the products go to four
// accumulators (independent chains: one FMA chain per 32 columns ran at half the memory's speed), then the
// group's sum times its scale joins the total.
MLX_TTS_AVX512 float dot_avx512(const QuantizedShape& s, const uint8_t* qn, const float* sn, const float* xs) {
  const __m512i low_nibble = _mm512_set1_epi32(0xF);
  __m512 total = _mm512_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m512 part[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int k0 = g * s.group_size, k1 = k0 + s.group_size;
    if (s.bits == 4) {
      for (int k = k0, i = 0; k < k1; k += 32, i ^= 2) {
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qn + k / 2)));
        const __m512 even = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, low_nibble));
        const __m512 odd = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
        part[i] = _mm512_fmadd_ps(even, _mm512_loadu_ps(xs + k), part[i]);
        part[i + 1] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xs + k + 16), part[i + 1]);
      }
    } else {  // 8 bits
      for (int k = k0, i = 0; k < k1; k += 16, i = (i + 1) & 3) {
        const __m512 values =
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qn + k))));
        part[i] = _mm512_fmadd_ps(values, _mm512_loadu_ps(xs + k), part[i]);
      }
    }
    const __m512 group_sum = _mm512_add_ps(_mm512_add_ps(part[0], part[1]), _mm512_add_ps(part[2], part[3]));
    total = _mm512_fmadd_ps(group_sum, _mm512_set1_ps(sn[g]), total);
  }
  return _mm512_reduce_add_ps(total);
}

// sum a[i] b[i] over n floats.
MLX_TTS_AVX512 float float_dot_avx512(const float* a, const float* b, int n) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

// Horizontal sum of 8 lanes.
MLX_TTS_AVX2 inline float reduce_add_avx2(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  return _mm_cvtss_f32(_mm_add_ss(sum, _mm_movehdup_ps(sum)));
}

// dot_avx512 in AVX2 registers: 8 bytes a step (4 bits: a 32-column block is two steps, each giving 8 even
// and 8 odd columns of split_even_odd's order).
MLX_TTS_AVX2 float dot_avx2(const QuantizedShape& s, const uint8_t* qn, const float* sn, const float* xs) {
  const __m256i low_nibble = _mm256_set1_epi32(0xF);
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m256 part[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int k0 = g * s.group_size, k1 = k0 + s.group_size;
    if (s.bits == 4) {
      for (int k = k0; k < k1; k += 32) {
        for (int h = 0; h < 2; ++h) {
          const __m256i bytes =
              _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qn + k / 2 + 8 * h)));
          const __m256 even = _mm256_cvtepi32_ps(_mm256_and_si256(bytes, low_nibble));
          const __m256 odd = _mm256_cvtepi32_ps(_mm256_srli_epi32(bytes, 4));
          part[2 * h] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xs + k + 8 * h), part[2 * h]);
          part[2 * h + 1] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xs + k + 16 + 8 * h), part[2 * h + 1]);
        }
      }
    } else {  // 8 bits
      for (int k = k0, i = 0; k < k1; k += 8, i = (i + 1) & 3) {
        const __m256 values =
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qn + k))));
        part[i] = _mm256_fmadd_ps(values, _mm256_loadu_ps(xs + k), part[i]);
      }
    }
    const __m256 group_sum = _mm256_add_ps(_mm256_add_ps(part[0], part[1]), _mm256_add_ps(part[2], part[3]));
    total = _mm256_fmadd_ps(group_sum, _mm256_set1_ps(sn[g]), total);
  }
  return reduce_add_avx2(total);
}

// The 8 values of a packed chunk as floats, from 16 bytes that start with the chunk's `bits` bytes (see
// dot_packed_avx2 for `gather`, `shifts` and `mask`).
MLX_TTS_AVX2 inline __m256 unpack_chunk(__m128i raw, __m256i gather, __m256i shifts, __m256i mask) {
  const __m256i words = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), gather);
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(words, shifts), mask));
}

// The 16 bytes from chunk `chunk` of a packed row on; chunks from `safe_chunks` on are copied out first, so that
// no load reaches past the row.
MLX_TTS_AVX2 inline __m128i chunk_bytes(const uint8_t* qn, int chunk, int bits, int safe_chunks) {
  if (chunk < safe_chunks) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(qn + chunk * bits));
  }
  alignas(16) uint8_t tail[16] = {};
  std::copy_n(qn + chunk * bits, bits, tail);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
}

// dot_avx2 for the widths without their own unpacking (2, 3, 5, 6 bits): 8 values (`bits` bytes) a step. Each
// 32-bit lane j gets the 4 bytes from byte j * bits / 8 on (one shuffle of the 16 bytes loaded), then is shifted
// right by (j * bits) % 8 and masked: a value spans at most 2 bytes.
MLX_TTS_AVX2 float dot_packed_avx2(const QuantizedShape& s, const uint8_t* qn, const float* sn, const float* xs) {
  alignas(32) int8_t byte_index[32];
  alignas(32) int32_t shift[8];
  for (int j = 0; j < 8; ++j) {
    for (int b = 0; b < 4; ++b) {
      byte_index[4 * j + b] = static_cast<int8_t>(j * s.bits / 8 + b);
    }
    shift[j] = j * s.bits % 8;
  }
  const __m256i gather = _mm256_load_si256(reinterpret_cast<const __m256i*>(byte_index));
  const __m256i shifts = _mm256_load_si256(reinterpret_cast<const __m256i*>(shift));
  const __m256i mask = _mm256_set1_epi32((1 << s.bits) - 1);
  // Chunks of 8 values whose 16-byte load stays within the row; the last few are copied out first.
  const int row_bytes = s.k * s.bits / 8, safe_chunks = std::max(0, (row_bytes - 16) / s.bits + 1);
  const int chunks_per_group = s.group_size / 8;
  __m256 total = _mm256_setzero_ps();
  for (int g = 0; g < s.groups(); ++g) {
    __m256 part[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int c0 = g * chunks_per_group, c1 = c0 + chunks_per_group;
    if (c1 <= safe_chunks) {  // every load of the group stays within the row
      const uint8_t* p = qn + c0 * s.bits;
      const float* xg = xs + 8 * c0;
      for (int c = 0; c < chunks_per_group; c += 4, p += 4 * s.bits, xg += 32) {
        for (int u = 0; u < 4; ++u) {
          const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + u * s.bits));
          part[u] = _mm256_fmadd_ps(unpack_chunk(raw, gather, shifts, mask), _mm256_loadu_ps(xg + 8 * u), part[u]);
        }
      }
    } else {
      for (int c = c0; c < c1; ++c) {
        const __m256 values = unpack_chunk(chunk_bytes(qn, c, s.bits, safe_chunks), gather, shifts, mask);
        part[c & 3] = _mm256_fmadd_ps(values, _mm256_loadu_ps(xs + 8 * c), part[c & 3]);
      }
    }
    const __m256 group_sum = _mm256_add_ps(_mm256_add_ps(part[0], part[1]), _mm256_add_ps(part[2], part[3]));
    total = _mm256_fmadd_ps(group_sum, _mm256_set1_ps(sn[g]), total);
  }
  return reduce_add_avx2(total);
}

MLX_TTS_AVX2 float float_dot_avx2(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  }
  float sum = reduce_add_avx2(acc);
  for (; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

using QuantizedDot = float (*)(const QuantizedShape&, const uint8_t*, const float*, const float*);
using FloatDot = float (*)(const float*, const float*, int);

// Output columns [n0, n1) with the SIMD dots (AVX-512 or AVX2). `xs`: x as the kernels read it (4-bit:
// split_even_odd); `x_sums`: per-row, per-group sums of x.
template <QuantizedDot Dot, FloatDot BiasDot>
void matvec_simd(const QuantizedShape& s, const uint8_t* q, const float* scales, const float* biases,
                 const float* xs, const float* x_sums, float* y, int n0, int n1) {
  const int groups = s.groups();
  const size_t row_bytes = static_cast<size_t>(s.k) * s.bits / 8;
  for (int n = n0; n < n1; ++n) {
    const float* sn = scales + static_cast<size_t>(n) * groups;
    const float* bn = biases + static_cast<size_t>(n) * groups;
    for (int m = 0; m < s.rows; ++m) {
      const float bias_term = BiasDot(bn, x_sums + static_cast<size_t>(m) * groups, groups);
      y[static_cast<size_t>(m) * s.n + n] = Dot(s, q + n * row_bytes, sn, xs + static_cast<size_t>(m) * s.k) + bias_term;
    }
  }
}

#endif  // MLX_TTS_X86

// The same in plain C++, on x in its own order (4 bits: byte j of a row holds columns 2j in its low nibble
// and 2j + 1 in its high one).
MLX_TTS_SIMD_CLONES
void matvec_portable(const QuantizedShape& s, const uint8_t* q, const float* scales, const float* biases,
                     const float* x, const float* x_sums, float* y, int n0, int n1) {
  const int groups = s.groups();
  const size_t row_bytes = static_cast<size_t>(s.k) * s.bits / 8, group_bytes = row_bytes / groups;
  for (int n = n0; n < n1; ++n) {
    const float* sn = scales + static_cast<size_t>(n) * groups;
    const float* bn = biases + static_cast<size_t>(n) * groups;
    for (int m = 0; m < s.rows; ++m) {
      float total = 0.0f;
      for (int g = 0; g < groups; ++g) {
        const uint8_t* qg = q + n * row_bytes + g * group_bytes;
        const float* xg = x + static_cast<size_t>(m) * s.k + g * s.group_size;
        float dot;
        if (s.bits == 4) {
          dot = lane_sum(s.group_size / 2, [&](int j) {
            return static_cast<float>(qg[j] & 0xF) * xg[2 * j] + static_cast<float>(qg[j] >> 4) * xg[2 * j + 1];
          });
        } else if (s.bits == 8) {
          dot = lane_sum(s.group_size, [&](int j) { return static_cast<float>(qg[j]) * xg[j]; });
        } else {
          dot = lane_sum(s.group_size, [&](int j) { return static_cast<float>(packed_value(qg, j, s.bits)) * xg[j]; });
        }
        total += sn[g] * dot + bn[g] * x_sums[static_cast<size_t>(m) * groups + g];
      }
      y[static_cast<size_t>(m) * s.n + n] = total;
    }
  }
}

// Inputs: x [rows, K] float32, weight [N, K * bits / 32] uint32, scales and biases [N, K / group_size] float32.
class QuantizedMatvec : public CpuPrimitive {
 public:
  QuantizedMatvec(mx::Stream stream, int group_size, int bits)
      : CpuPrimitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    mx::array& y = outputs[0];
    auto& encoder = prepare(inputs, y);
    const QuantizedShape s{x.shape(0), x.shape(1), y.shape(1), group_size_, bits_};
    encoder.dispatch([s, x = x.data<float>(), q = inputs[1].data<uint8_t>(), scales = inputs[2].data<float>(),
                      biases = inputs[3].data<float>(), y = y.data<float>()]() {
      std::vector<float> x_sums(static_cast<size_t>(s.rows) * s.groups(), 0.0f);
      for (int m = 0; m < s.rows; ++m) {
        for (int k = 0; k < s.k; ++k) {
          x_sums[static_cast<size_t>(m) * s.groups() + k / s.group_size] += x[static_cast<size_t>(m) * s.k + k];
        }
      }
#if MLX_TTS_X86
      if (cpu_has_avx2_fma()) {  // every AVX-512 CPU has AVX2 and FMA
        const std::vector<float> reordered = s.bits == 4 ? split_even_odd(x, s.rows, s.k) : std::vector<float>();
        const float* xs = reordered.empty() ? x : reordered.data();
        const auto rows = s.bits != 4 && s.bits != 8 ? matvec_simd<dot_packed_avx2, float_dot_avx2>
                          : cpu_has_avx512()         ? matvec_simd<dot_avx512, float_dot_avx512>
                                                     : matvec_simd<dot_avx2, float_dot_avx2>;
        parallel_for(s.n, kMinRowsPerChunk, kMaxRowsPerChunk, [&](int n0, int n1) {
          rows(s, q, scales, biases, xs, x_sums.data(), y, n0, n1);
        });
        return;
      }
#endif
      parallel_for(s.n, kMinRowsPerChunk, kMaxRowsPerChunk, [&](int n0, int n1) {
        matvec_portable(s, q, scales, biases, x, x_sums.data(), y, n0, n1);
      });
    });
  }


  const char* name() const override {
    return "QuantizedMatvec";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), inputs[1].shape(0)}};
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantizedMatvec&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_;
  }

 private:
  int group_size_, bits_;
};

// Rows [n0, n1) of the float matrix: w = q * scale + bias, multiplied then added (no FMA), as MLX does, so
// the result is bit-identical to mx.dequantize. Plain loops: they compile to SIMD code per CPU.
MLX_TTS_SIMD_CLONES
void dequantize_rows(const QuantizedShape& s, const uint8_t* q, const float* scales, const float* biases, float* w,
                     int n0, int n1) {
  const int groups = s.groups();
  const size_t row_bytes = static_cast<size_t>(s.k) * s.bits / 8;
  for (int n = n0; n < n1; ++n) {
    const uint8_t* qn = q + n * row_bytes;
    float* wn = w + static_cast<size_t>(n) * s.k;
    for (int g = 0; g < groups; ++g) {
      const float scale = scales[static_cast<size_t>(n) * groups + g];
      const float bias = biases[static_cast<size_t>(n) * groups + g];
      const int k0 = g * s.group_size;
      if (s.bits == 4) {
        for (int j = 0; j < s.group_size / 2; ++j) {
          const uint8_t byte = qn[k0 / 2 + j];
          const float low = static_cast<float>(byte & 0xF) * scale;
          const float high = static_cast<float>(byte >> 4) * scale;
          wn[k0 + 2 * j] = low + bias;
          wn[k0 + 2 * j + 1] = high + bias;
        }
      } else if (s.bits == 8) {
        for (int j = 0; j < s.group_size; ++j) {
          const float value = static_cast<float>(qn[k0 + j]) * scale;
          wn[k0 + j] = value + bias;
        }
      } else {
        for (int j = k0; j < k0 + s.group_size; ++j) {
          const float value = static_cast<float>(packed_value(qn, j, s.bits)) * scale;
          wn[j] = value + bias;
        }
      }
    }
  }
}

inline __attribute__((always_inline)) float bf16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

#if MLX_TTS_X86

// Row n of a bfloat16 matrix times one row of x (K a multiple of 16 for the vector loop; the rest in scalar).
MLX_TTS_AVX512 float bf16_dot_avx512(const uint16_t* wn, const float* x, int k) {
  __m512 part[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int j = 0;
  for (int i = 0; j + 16 <= k; j += 16, i = (i + 1) & 3) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wn + j)));
    part[i] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)), _mm512_loadu_ps(x + j), part[i]);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(part[0], part[1]), _mm512_add_ps(part[2], part[3])));
  for (; j < k; ++j) {
    sum += bf16_to_float(wn[j]) * x[j];
  }
  return sum;
}

#endif  // MLX_TTS_X86

// Output columns [n0, n1) of x [rows, k] times the bfloat16 matrix w [n, k], transposed, in plain C++.
MLX_TTS_SIMD_CLONES
void bf16_matvec_portable(int rows, int k, int n, const float* x, const uint16_t* w, float* y, int n0, int n1) {
  for (int j = n0; j < n1; ++j) {
    const uint16_t* wj = w + static_cast<size_t>(j) * k;
    for (int m = 0; m < rows; ++m) {
      const float* xm = x + static_cast<size_t>(m) * k;
      y[static_cast<size_t>(m) * n + j] = lane_sum(k, [&](int i) { return bf16_to_float(wj[i]) * xm[i]; });
    }
  }
}

// Inputs: x [rows, K] float32, weight [N, K] bfloat16 -> [rows, N] float32.
class Bfloat16Matvec : public CpuPrimitive {
 public:
  explicit Bfloat16Matvec(mx::Stream stream) : CpuPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    mx::array& y = outputs[0];
    auto& encoder = prepare(inputs, y);
    const int rows = x.shape(0), k = x.shape(1), n = y.shape(1);
    encoder.dispatch([rows, k, n, x = x.data<float>(), w = inputs[1].data<uint16_t>(), y = y.data<float>()]() {
      parallel_for(n, kMinRowsPerChunk, kMaxRowsPerChunk, [&](int n0, int n1) {
#if MLX_TTS_X86
        if (cpu_has_avx512()) {
          for (int j = n0; j < n1; ++j) {
            for (int m = 0; m < rows; ++m) {
              y[static_cast<size_t>(m) * n + j] =
                  bf16_dot_avx512(w + static_cast<size_t>(j) * k, x + static_cast<size_t>(m) * k, k);
            }
          }
          return;
        }
#endif
        bf16_matvec_portable(rows, k, n, x, w, y, n0, n1);
      });
    });
  }


  const char* name() const override {
    return "Bfloat16Matvec";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), inputs[1].shape(0)}};
  }

  bool is_equivalent(const mx::Primitive&) const override {
    return true;
  }
};

// Inputs: weight [N, K * bits / 32] uint32, scales and biases [N, K / group_size] float32 -> [N, K] float32.
class Dequantize : public CpuPrimitive {
 public:
  Dequantize(mx::Stream stream, int group_size, int bits) : CpuPrimitive(stream), group_size_(group_size), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    mx::array& w = outputs[0];
    auto& encoder = prepare(inputs, w);
    const QuantizedShape s{0, w.shape(1), w.shape(0), group_size_, bits_};
    encoder.dispatch([s, q = inputs[0].data<uint8_t>(), scales = inputs[1].data<float>(),
                      biases = inputs[2].data<float>(), w = w.data<float>()]() {
      const int rows_per_chunk = std::max(1, (1 << 16) / s.k);  // ~256 KiB of output per chunk
      parallel_for(s.n, rows_per_chunk, 4 * rows_per_chunk,
                   [&](int n0, int n1) { dequantize_rows(s, q, scales, biases, w, n0, n1); });
    });
  }


  const char* name() const override {
    return "FastDequantize";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), static_cast<int>(static_cast<long>(inputs[0].shape(1)) * 32 / bits_)}};
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const Dequantize&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_;
  }

 private:
  int group_size_, bits_;
};

// Checks the packed operands of an N x K matrix; returns N.
int check_packed(const char* op, const mx::array& weight, const mx::array& scales, const mx::array& biases, int k,
                 int group_size, int bits) {
  auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (bits < 2 || bits > 8 || bits == 7) {
    fail("only 2, 3, 4, 5, 6 and 8 bits are supported");
  }
  if (group_size != 32 && group_size != 64 && group_size != 128) {
    fail("group_size must be 32, 64 or 128");
  }
  if (scales.dtype() != mx::float32 || biases.dtype() != mx::float32 || weight.dtype() != mx::uint32) {
    fail("expected float32 scales and biases and a uint32 weight");
  }
  if (k % group_size != 0 || weight.ndim() != 2 || static_cast<long>(weight.shape(1)) * 32 != static_cast<long>(k) * bits) {
    fail("weight must be [N, K * bits / 32] with K a multiple of group_size");
  }
  const int n = weight.shape(0);
  if (scales.shape() != mx::Shape{n, k / group_size} || biases.shape() != scales.shape()) {
    fail("scales and biases must be [N, K / group_size]");
  }
  return n;
}

}  // namespace

mx::array dequantize(const mx::array& weight, const mx::array& scales, const mx::array& biases, int group_size,
                     int bits) {
  if (weight.ndim() != 2) {
    throw std::invalid_argument("dequantize: weight must be [N, K * bits / 32]");
  }
  const int k = static_cast<int>(static_cast<long>(weight.shape(1)) * 32 / bits);
  const int n = check_packed("dequantize", weight, scales, biases, k, group_size, bits);
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array({n, k}, mx::float32, std::make_shared<Dequantize>(stream, group_size, bits),
                   {mx::contiguous(weight, false, stream), mx::contiguous(scales, false, stream),
                    mx::contiguous(biases, false, stream)});
}

mx::array quantized_matvec(const mx::array& x, const mx::array& weight, const mx::array& scales,
                           const mx::array& biases, int group_size, int bits) {
  if (x.ndim() != 2 || x.shape(0) < 1 || x.shape(0) > kMaxRows) {
    throw std::invalid_argument("quantized_matvec: x must be [rows, K] with 1 to " + std::to_string(kMaxRows) +
                                " rows");
  }
  if (x.dtype() != mx::float32) {
    throw std::invalid_argument("quantized_matvec: expected float32 x");
  }
  const int n = check_packed("quantized_matvec", weight, scales, biases, x.shape(1), group_size, bits);
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array({x.shape(0), n}, mx::float32, std::make_shared<QuantizedMatvec>(stream, group_size, bits),
                   {mx::contiguous(x, false, stream), mx::contiguous(weight, false, stream),
                    mx::contiguous(scales, false, stream), mx::contiguous(biases, false, stream)});
}

mx::array bfloat16_matvec(const mx::array& x, const mx::array& weight) {
  if (x.ndim() != 2 || x.shape(0) < 1 || x.shape(0) > kMaxRows || x.dtype() != mx::float32) {
    throw std::invalid_argument("bfloat16_matvec: x must be float32 [rows, K] with 1 to " + std::to_string(kMaxRows) +
                                " rows");
  }
  if (weight.ndim() != 2 || weight.dtype() != mx::bfloat16 || weight.shape(1) != x.shape(1)) {
    throw std::invalid_argument("bfloat16_matvec: weight must be bfloat16 [N, K] with x's K");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  return mx::array({x.shape(0), weight.shape(0)}, mx::float32, std::make_shared<Bfloat16Matvec>(stream),
                   {mx::contiguous(x, false, stream), mx::contiguous(weight, false, stream)});
}

}  // namespace mlx_tts
