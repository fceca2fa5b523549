// Direct CPU convolutions for MLX: each kernel tap is one strided GEMM that accumulates into the output.
//
// conv1d:            y[t]                         += x[t * stride - padding + k * dilation] @ W[:, k, :]^T
// conv_transpose1d:  y[t * stride - padding + k]  += x[t] @ W[:, k, :]^T
//
// Both read the input and the weight ([C_out, K, C_in], MLX layout) and write the output in place through
// BLAS leading dimensions, so there is no im2col buffer, no zero insertion and no overlap-add pass.
// The output rows are split over threads, and each thread's rows are processed in blocks that stay in
// cache while all taps accumulate into them.
// cblas_sgemm binds at load time to the first library in the global scope that exports it: the optimized
// BLAS that mlx_tts.cpu_blas loaded, else the reference BLAS that the mlx-cpu wheel bundles.

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>

#include "direct_conv.h"
#include "kernels.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace mlx_tts {

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
// Output rows per cache block: 512 rows x 256 channels x 4 bytes = 512 KiB, half of a core's L2.
constexpr int kBlockElements = 512 * 256;
// Fewer output rows than this per chunk of work cost more in thread handoff than they save.
constexpr int kMinRowsPerChunk = 32;
// From this many output rows on, convolutions run the direct kernel (when the CPU has AVX-512): packing
// its weights costs about as much as computing a few dozen rows.
constexpr int kDirectMinRows = 512;
// Direct kernel work chunks, in tiles of kDirectTileRows rows: small enough that a thread that starts late still gets a share.
constexpr int kMinTilesPerChunk = 4, kMaxTilesPerChunk = 16;

int block_rows(int c_out) {
  return std::max(16, kBlockElements / c_out);
}

// ceil(a / b) for b > 0 and any sign of a.
int ceil_div(int a, int b) {
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

// floor(a / b) for b > 0 and any sign of a.
int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Output length, or <= 0 when the input is shorter than the kernel. `extra` is the dilation of a
// convolution, the output_padding of a transposed one.
int output_length(bool transpose, int t_in, int kernel, int stride, int padding, int extra) {
  if (transpose) {
    return (t_in - 1) * stride - 2 * padding + kernel + extra;
  }
  const int span = t_in + 2 * padding - extra * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

void fill_rows(float* y, const float* bias, int rows, int channels) {
  for (int r = 0; r < rows; ++r) {
    float* row = y + static_cast<size_t>(r) * channels;
    if (bias) {
      std::copy(bias, bias + channels, row);
    } else {
      std::fill(row, row + channels, 0.0f);
    }
  }
}

// Computes output rows [r0, r1) of one batch item: cache-sized blocks, each initialized with the bias, then
// one strided GEMM per tap accumulating into it.
void conv_rows(const ConvShape& s, bool transpose, const float* x, const float* w, const float* bias, float* y,
               int r0, int r1) {
  const int rows_per_block = block_rows(s.c_out);
  for (int b0 = r0; b0 < r1; b0 += rows_per_block) {
    const int b1 = std::min(r1, b0 + rows_per_block);
    fill_rows(y + static_cast<size_t>(b0) * s.c_out, bias, b1 - b0, s.c_out);
    for (int k = 0; k < s.kernel; ++k) {
      if (transpose) {
        // Input row t writes output row t * stride + shift.
        const int shift = k - s.padding;
        const int lo = std::max(0, ceil_div(b0 - shift, s.stride));
        const int hi = std::min(s.t_in - 1, floor_div(b1 - 1 - shift, s.stride));
        if (hi >= lo) {
          cblas_sgemm(kRowMajor, kNoTrans, kTrans, hi - lo + 1, s.c_out, s.c_in, 1.0f,
                      x + static_cast<size_t>(lo) * s.c_in, s.c_in, w + static_cast<size_t>(k) * s.c_in,
                      s.kernel * s.c_in, 1.0f, y + static_cast<size_t>(lo * s.stride + shift) * s.c_out,
                      s.stride * s.c_out);
        }
      } else {
        // Output row t reads input row t * stride + shift.
        const int shift = k * s.dilation - s.padding;
        const int lo = std::max(b0, ceil_div(-shift, s.stride));
        const int hi = std::min(b1 - 1, floor_div(s.t_in - 1 - shift, s.stride));
        if (hi >= lo) {
          cblas_sgemm(kRowMajor, kNoTrans, kTrans, hi - lo + 1, s.c_out, s.c_in, 1.0f,
                      x + static_cast<size_t>(lo * s.stride + shift) * s.c_in, s.stride * s.c_in,
                      w + static_cast<size_t>(k) * s.c_in, s.kernel * s.c_in, 1.0f,
                      y + static_cast<size_t>(lo) * s.c_out, s.c_out);
        }
      }
    }
  }
}

// The row families (see TapFamily) of a convolution and rows [first, last] of each that land in the output.
struct Family {
  TapFamily rows;
  int tap_first, tap_stride, first, last;
};

std::vector<Family> tap_families(const ConvShape& s, bool transpose) {
  if (!transpose) {
    return {{{-s.padding, s.stride, s.dilation, s.kernel, 0, s.c_out}, 0, 1, 0, s.t_out - 1}};
  }
  // Output row o = u * stride + phase - padding takes taps phase + j * stride from input rows u - j.
  std::vector<Family> families;
  for (int phase = 0; phase < s.stride; ++phase) {
    const int taps = phase < s.kernel ? (s.kernel - phase + s.stride - 1) / s.stride : 0;
    const long y_first = static_cast<long>(phase - s.padding) * s.c_out;
    families.push_back({{0, 1, -1, taps, y_first, static_cast<long>(s.stride) * s.c_out}, phase, s.stride,
                        ceil_div(s.padding - phase, s.stride), floor_div(s.t_out - 1 + s.padding - phase, s.stride)});
  }
  return families;
}

// Runs every family through the direct kernel: weights packed once per call, then all families' tiles
// shared out to the threads as one list of work.
void direct_conv(const ConvShape& s, bool transpose, const float* x, const float* w, const float* bias, float* y) {
  std::vector<Family> families = tap_families(s, transpose);
  std::vector<std::vector<float>> packed(families.size());
  constexpr int kTile = kDirectTileRows;
  std::vector<int> tile_start = {0};  // prefix sums of the families' tiles
  for (size_t f = 0; f < families.size(); ++f) {
    packed[f].assign(packed_size(s, families[f].rows.taps), 0.0f);
    const int rows = std::max(0, families[f].last - families[f].first + 1);
    tile_start.push_back(tile_start.back() + (families[f].rows.taps > 0 ? (rows + kTile - 1) / kTile : 0));
  }
  parallel_for(s.c_out, 16, 64, [&](int o0, int o1) {
    for (size_t f = 0; f < families.size(); ++f) {
      const Family& family = families[f];
      pack_taps(s, w, family.tap_first, family.tap_stride, family.rows.taps, o0, o1, packed[f].data());
    }
  });
  for (int b = 0; b < s.batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * s.t_in * s.c_in;
    float* yb = y + static_cast<size_t>(b) * s.t_out * s.c_out;
    for (const Family& family : families) {
      if (family.rows.taps == 0) {  // a phase that no tap reaches (kernel < stride): bias only
        for (int u = family.first; u <= family.last; ++u) {
          fill_rows(yb + family.rows.y_first + u * family.rows.y_step, bias, 1, s.c_out);
        }
      }
    }
    parallel_for(tile_start.back(), kMinTilesPerChunk, kMaxTilesPerChunk, [&](int t0, int t1) {
      for (size_t f = 0; f < families.size(); ++f) {
        const int lo = std::max(t0, tile_start[f]), hi = std::min(t1, tile_start[f + 1]);
        if (lo < hi) {
          const Family& family = families[f];
          const int u0 = family.first + (lo - tile_start[f]) * kTile;
          const int u1 = std::min(family.last + 1, family.first + (hi - tile_start[f]) * kTile);
          direct_rows(s, family.rows, xb, packed[f].data(), bias, yb, u0, u1);
        }
      }
    });
  }
}

class TapConv : public mx::Primitive {
 public:
  TapConv(mx::Stream stream, bool transpose, int stride, int padding, int extra)
      : mx::Primitive(stream), transpose_(transpose), stride_(stride), padding_(padding), extra_(extra) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs[1];
    mx::array& y = outputs[0];
    y.set_data(mx::allocator::malloc(y.nbytes()));
    const int dilation = transpose_ ? 1 : extra_;
    const ConvShape s{x.shape(0), x.shape(1), x.shape(2), y.shape(1), y.shape(2), w.shape(1), stride_, padding_, dilation};
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) {
      encoder.set_input_array(a);
    }
    encoder.set_output_array(y);
    const float* bias = inputs.size() > 2 ? inputs[2].data<float>() : nullptr;
    encoder.dispatch([s, transpose = transpose_, x = x.data<float>(), w = w.data<float>(), bias,
                      y = y.data<float>()]() {
      if (s.t_out >= kDirectMinRows && direct_conv_available()) {
        direct_conv(s, transpose, x, w, bias, y);
        return;
      }
      for (int b = 0; b < s.batch; ++b) {
        const float* xb = x + static_cast<size_t>(b) * s.t_in * s.c_in;
        float* yb = y + static_cast<size_t>(b) * s.t_out * s.c_out;
        parallel_for(s.t_out, kMinRowsPerChunk, block_rows(s.c_out),
                     [&](int r0, int r1) { conv_rows(s, transpose, xb, w, bias, yb, r0, r1); });
      }
    });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("mlx_tts convolution kernels run on the CPU only");
  }

  const char* name() const override {
    return transpose_ ? "TapConvTranspose1d" : "TapConv1d";
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs[1];
    return {{x.shape(0), output_length(transpose_, x.shape(1), w.shape(1), stride_, padding_, extra_), w.shape(0)}};
  }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const TapConv&>(other);
    return transpose_ == o.transpose_ && stride_ == o.stride_ && padding_ == o.padding_ && extra_ == o.extra_;
  }

 private:
  bool transpose_;
  int stride_, padding_, extra_;
};

void check_operands(const char* op, const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias) {
  auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (x.ndim() != 3 || w.ndim() != 3) {
    fail("expected x [B, T, C_in] and weight [C_out, K, C_in]");
  }
  if (x.shape(2) != w.shape(2)) {
    std::ostringstream msg;
    msg << "x has " << x.shape(2) << " channels but weight expects " << w.shape(2);
    fail(msg.str());
  }
  if (x.dtype() != mx::float32 || w.dtype() != mx::float32 || (bias && bias->dtype() != mx::float32)) {
    fail("only float32 is supported");
  }
  if (bias && (bias->ndim() != 1 || bias->shape(0) != w.shape(0))) {
    fail("bias must have shape [C_out]");
  }
}

mx::array make_conv(bool transpose, const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias,
                    int stride, int padding, int extra) {
  check_operands(transpose ? "conv_transpose1d" : "conv1d", x, w, bias);
  if (stride < 1 || padding < 0 || extra < (transpose ? 0 : 1)) {
    throw std::invalid_argument(transpose ? "conv_transpose1d: need stride >= 1, padding >= 0, output_padding >= 0"
                                          : "conv1d: need stride >= 1, padding >= 0, dilation >= 1");
  }
  const int t_out = output_length(transpose, x.shape(1), w.shape(1), stride, padding, extra);
  if (t_out <= 0) {
    throw std::invalid_argument("convolution output would be empty: input too short for the kernel");
  }
  auto stream = mx::default_stream(mx::Device::cpu);
  std::vector<mx::array> inputs = {mx::contiguous(x, false, stream), mx::contiguous(w, false, stream)};
  if (bias) {
    inputs.push_back(mx::contiguous(*bias, false, stream));
  }
  return mx::array({x.shape(0), t_out, w.shape(0)}, mx::float32,
                   std::make_shared<TapConv>(stream, transpose, stride, padding, extra), std::move(inputs));
}

}  // namespace

mx::array conv1d(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias, int stride,
                 int padding, int dilation) {
  return make_conv(false, x, w, bias, stride, padding, dilation);
}

mx::array conv_transpose1d(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias,
                           int stride, int padding, int output_padding) {
  return make_conv(true, x, w, bias, stride, padding, output_padding);
}

}  // namespace mlx_tts
