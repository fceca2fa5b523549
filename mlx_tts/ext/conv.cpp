// Direct CPU convolutions for MLX: each kernel tap is one strided GEMM that accumulates into the output.
//
// conv1d:            y[t]                         += x[t * stride - padding + k * dilation] @ W[:, k, :]^T
// conv_transpose1d:  y[t * stride - padding + k]  += x[t] @ W[:, k, :]^T
//
// y starts as the bias, plus a residual when one is given (a residual block's x + conv(...) without a pass of
// its own; y then takes over the residual's buffer when nothing else holds it). conv1d can also apply
// Kokoro's AdaIN and Snake to its input as it reads it (see norm_snake.h), so that the normalized input,
// as large as x, is never written to memory: the direct kernel transforms each chunk's input rows into a
// buffer that stays in cache.
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

#include "cpu_primitive.h"
#include "direct_conv.h"
#include "fft_conv.h"
#include "kernels.h"
#include "norm_snake.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "parallel.h"
#include "simd.h"

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace mlx_tts {

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
// Output rows per cache block: 512 rows x 256 channels x 4 bytes = 512 KiB, half of a core's L2.
constexpr int kBlockElements = 512 * 256;
// Fewer output rows than this per chunk of work cost more in thread handoff than they save.
constexpr int kMinRowsPerChunk = 32;

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

// An input as the task will read it: its buffer and layout, taken when the operation is encoded; its values
// exist only once the task runs. x and the residual are taken as they come rather than through
// mx::contiguous: a Contiguous node would share the residual's buffer and so keep the output from taking it
// over. (Nor can it be taken over while an operation still pending on the stream reads it: evaluate that
// one first.)
struct InputView {
  const float* data;
  bool row_contiguous;
  std::vector<int> shape;
  std::vector<int64_t> strides;
  size_t size;

  static InputView of(const mx::array& a) {
    return {a.data<float>(), a.flags().row_contiguous, {a.shape().begin(), a.shape().end()},
            {a.strides().begin(), a.strides().end()}, a.size()};
  }

  // In the task: the elements in row-major order, the buffer itself or a copy in `scratch` (strided inputs,
  // rare).
  const float* row_major(std::vector<float>& scratch) const {
    if (row_contiguous) {
      return data;
    }
    scratch.resize(size);
    std::vector<int> index(shape.size(), 0);
    for (size_t i = 0; i < size; ++i) {
      int64_t offset = 0;
      for (size_t d = 0; d < shape.size(); ++d) {
        offset += index[d] * strides[d];
      }
      scratch[i] = data[offset];
      for (int d = static_cast<int>(shape.size()) - 1; d >= 0 && ++index[d] == shape[d]; --d) {
        index[d] = 0;
      }
    }
    return scratch.data();
  }
};

// Output rows before any tap: the bias plus the residual (laid out as y; may be y itself, or null).
void fill_rows(float* y, const float* bias, const float* residual, int rows, int channels) {
  for (int r = 0; r < rows; ++r) {
    float* row = y + static_cast<size_t>(r) * channels;
    const float* res = residual ? residual + static_cast<size_t>(r) * channels : nullptr;
    for (int c = 0; c < channels; ++c) {
      row[c] = (bias ? bias[c] : 0.0f) + (res ? res[c] : 0.0f);
    }
  }
}

// Computes output rows [r0, r1) of one batch item: cache-sized blocks, each initialized with the bias and
// residual, then one strided GEMM per tap accumulating into it. x holds the input from row x_row0 on.
void conv_rows(const ConvShape& s, bool transpose, const float* x, const float* w, const float* bias,
               const float* residual, float* y, int r0, int r1, int x_row0 = 0) {
  const int rows_per_block = block_rows(s.c_out);
  for (int b0 = r0; b0 < r1; b0 += rows_per_block) {
    const int b1 = std::min(r1, b0 + rows_per_block);
    const size_t offset = static_cast<size_t>(b0) * s.c_out;
    fill_rows(y + offset, bias, residual ? residual + offset : nullptr, b1 - b0, s.c_out);
    for (int k = 0; k < s.kernel; ++k) {
      if (transpose) {
        // Input row t writes output row t * stride + shift.
        const int shift = k - s.padding;
        const int lo = std::max(0, ceil_div(b0 - shift, s.stride));
        const int hi = std::min(s.t_in - 1, floor_div(b1 - 1 - shift, s.stride));
        if (hi >= lo) {
          cblas_sgemm(kRowMajor, kNoTrans, kTrans, hi - lo + 1, s.c_out, s.c_in, 1.0f,
                      x + static_cast<size_t>(lo - x_row0) * s.c_in, s.c_in, w + static_cast<size_t>(k) * s.c_in,
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
                      x + static_cast<size_t>(lo * s.stride + shift - x_row0) * s.c_in, s.stride * s.c_in,
                      w + static_cast<size_t>(k) * s.c_in, s.kernel * s.c_in, 1.0f,
                      y + static_cast<size_t>(lo) * s.c_out, s.c_out);
        }
      }
    }
  }
}

// conv_rows for an input read through `transform`: each chunk of output rows transforms the input rows it
// reaches into a buffer of its own, which stays in cache (a transformed copy of the whole input would be as
// large as x, and on a VM its fresh pages cost as much to fault in as the convolution's GEMMs).
void transformed_conv_rows(const ConvShape& s, const float* x, const ChannelTransform& transform, const float* w,
                           const float* bias, const float* residual, float* y) {
  const int reach = (s.kernel - 1) * s.dilation;
  parallel_for(s.t_out, kMinRowsPerChunk, block_rows(s.c_out), [&](int r0, int r1) {
    const int lo = std::max(0, r0 * s.stride - s.padding);
    const int hi = std::min(s.t_in - 1, (r1 - 1) * s.stride - s.padding + reach);
    thread_local std::vector<float> buffer;
    buffer.resize(static_cast<size_t>(std::max(0, hi - lo + 1)) * s.c_in);
    if (hi >= lo) {
      transform.apply(x + static_cast<size_t>(lo) * s.c_in, buffer.data(), hi - lo + 1);
    }
    conv_rows(s, false, buffer.data(), w, bias, residual, y, r0, r1, lo);
  });
}

#if MLX_TTS_X86  // the direct kernel (direct_conv.h)

// From this many output rows on, convolutions run the direct kernel (when the CPU has AVX-512): packing
// its weights costs about as much as computing a few dozen rows.
constexpr int kDirectMinRows = 512;
// Direct kernel work chunks, in tiles of kDirectTileRows rows: small enough that a thread that starts late still gets a share.
constexpr int kMinTilesPerChunk = 4, kMaxTilesPerChunk = 16;
// With an input transform, a chunk's input rows are transformed into a buffer of its own, so chunks are
// larger (the rows its taps reach past its end are transformed twice) but stay in L2: at most this many rows.
constexpr int kMinTransformRows = 192, kMaxTransformRows = 576;

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

// Output rows [0, t_out) of a convolution (one family) whose input is x after `transform`: each chunk of rows
// transforms the input rows its taps reach into a buffer (zero rows for the padding), then runs its tiles on it.
void direct_transformed_rows(const ConvShape& s, const TapFamily& family, const float* x,
                             const ChannelTransform& transform, const float* packed, const float* bias,
                             const float* residual, float* y) {
  const int reach = (s.kernel - 1) * s.dilation;
  const int balanced = ceil_div(s.t_out, 4 * worker_count());
  const int chunk = kDirectTileRows * ceil_div(std::clamp(std::min(4 * reach, balanced), kMinTransformRows,
                                                          kMaxTransformRows), kDirectTileRows);
  parallel_for(ceil_div(s.t_out, chunk), 1, 1, [&](int c0, int c1) {
    std::vector<float> buffer;
    for (int c = c0; c < c1; ++c) {
      const int u0 = c * chunk, u1 = std::min(s.t_out, u0 + chunk);
      const int lo = family.x_first + u0 * family.x_step;  // first input row the chunk reads
      const int hi = family.x_first + (u1 - 1) * family.x_step + reach;
      buffer.assign(static_cast<size_t>(hi - lo + 1) * s.c_in, 0.0f);
      const int copy_lo = std::max(lo, 0), copy_hi = std::min(hi, s.t_in - 1);
      if (copy_hi >= copy_lo) {
        transform.apply(x + static_cast<size_t>(copy_lo) * s.c_in,
                        buffer.data() + static_cast<size_t>(copy_lo - lo) * s.c_in, copy_hi - copy_lo + 1);
      }
      ConvShape chunk_shape = s;
      chunk_shape.t_in = hi - lo + 1;
      TapFamily chunk_family = family;
      chunk_family.x_first -= lo;
      direct_rows(chunk_shape, chunk_family, buffer.data(), packed, bias, residual, y, u0, u1);
    }
  });
}

// Runs every family through the direct kernel: weights packed once per call, then all families' tiles
// shared out to the threads as one list of work. `transforms` (one per batch item, conv1d only): applied
// to the input as it is read.
void direct_conv(const ConvShape& s, bool transpose, const float* x, const float* w, const float* bias,
                 const float* residual, float* y, const std::vector<ChannelTransform>& transforms) {
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
    const float* rb = residual ? residual + static_cast<size_t>(b) * s.t_out * s.c_out : nullptr;
    if (!transforms.empty()) {
      direct_transformed_rows(s, families[0].rows, xb, transforms[b], packed[0].data(), bias, rb, yb);
      continue;
    }
    for (const Family& family : families) {
      if (family.rows.taps == 0) {  // a phase that no tap reaches (kernel < stride): bias and residual only
        for (int u = family.first; u <= family.last; ++u) {
          const long offset = family.rows.y_first + u * family.rows.y_step;
          fill_rows(yb + offset, bias, rb ? rb + offset : nullptr, 1, s.c_out);
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
          direct_rows(s, family.rows, xb, packed[f].data(), bias, rb, yb, u0, u1);
        }
      }
    });
  }
}

#endif  // MLX_TTS_X86

// Which optional operands a convolution has; they follow x and the weight in this order.
struct ConvOperands {
  bool bias = false, residual = false, input_norm = false, input_snake = false;
  float eps = 0.0f;

  bool operator==(const ConvOperands&) const = default;
  int bias_index() const { return 2; }
  int residual_index() const { return 2 + bias; }
  int gamma_index() const { return 2 + bias + residual; }  // then beta
  int alpha_index() const { return gamma_index() + 2 * input_norm; }
};

class TapConv : public CpuPrimitive {
 public:
  TapConv(mx::Stream stream, bool transpose, int stride, int padding, int extra, ConvOperands operands)
      : CpuPrimitive(stream),
        transpose_(transpose),
        stride_(stride),
        padding_(padding),
        extra_(extra),
        operands_(operands) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs[1];
    mx::array& y = outputs[0];
    const ConvOperands op = operands_;
    const mx::array* residual = op.residual ? &inputs[op.residual_index()] : nullptr;
    // The output takes over the residual's buffer when nothing else holds it (not x either: a view of the same
    // buffer would count): each element of y reads only the same element of the residual, before it is written.
    const bool in_place = residual && residual->flags().row_contiguous && residual->is_donatable();
    if (in_place) {
      y.copy_shared_buffer(*residual);
    }
    auto& encoder = prepare(inputs, y);
    const int dilation = transpose_ ? 1 : extra_;
    const ConvShape s{x.shape(0), x.shape(1), x.shape(2), y.shape(1), y.shape(2), w.shape(1), stride_, padding_, dilation};
    const float* bias = op.bias ? inputs[op.bias_index()].data<float>() : nullptr;
    const InputView x_view = InputView::of(x);
    const std::optional<InputView> residual_view =
        residual && !in_place ? std::optional<InputView>(InputView::of(*residual)) : std::nullopt;
    const float* gamma = op.input_norm ? inputs[op.gamma_index()].data<float>() : nullptr;
    const float* beta = op.input_norm ? inputs[op.gamma_index() + 1].data<float>() : nullptr;
    const float* alpha = op.input_snake ? inputs[op.alpha_index()].data<float>() : nullptr;
    encoder.dispatch([s, transpose = transpose_, x_view, w = w.data<float>(), bias, residual_view, in_place, gamma,
                      beta, alpha, op, y = y.data<float>()]() {
      std::vector<float> x_scratch, residual_scratch;
      const float* x = x_view.row_major(x_scratch);
      const float* res = in_place ? y : (residual_view ? residual_view->row_major(residual_scratch) : nullptr);
      std::vector<ChannelTransform> transforms;  // of the input, one per batch item
      for (int b = 0; (op.input_norm || op.input_snake) && b < s.batch; ++b) {
        transforms.push_back(op.input_norm ? ChannelTransform::adain(x + static_cast<size_t>(b) * s.t_in * s.c_in,
                                                                     s.t_in, s.c_in, gamma + b * s.c_in,
                                                                     beta + b * s.c_in, op.eps, alpha)
                                           : ChannelTransform::snake(s.c_in, alpha));
      }
#if MLX_TTS_X86
      if (s.t_out >= kDirectMinRows && cpu_has_avx512()) {
        direct_conv(s, transpose, x, w, bias, res, y, transforms);
        return;
      }
#endif
      for (int b = 0; b < s.batch; ++b) {
        const float* xb = x + static_cast<size_t>(b) * s.t_in * s.c_in;
        const ChannelTransform* transform = transforms.empty() ? nullptr : &transforms[b];
        const size_t y_offset = static_cast<size_t>(b) * s.t_out * s.c_out;
        const float* rb = res ? res + y_offset : nullptr;
        if (!transpose && fft_conv_pays(s)) {
          fft_conv1d(s, xb, transform, w, bias, rb, y + y_offset);
        } else if (transform) {
          transformed_conv_rows(s, xb, *transform, w, bias, rb, y + y_offset);
        } else {
          parallel_for(s.t_out, kMinRowsPerChunk, block_rows(s.c_out), [&](int r0, int r1) {
            conv_rows(s, transpose, xb, w, bias, rb, y + y_offset, r0, r1);
          });
        }
      }
    });
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
    return transpose_ == o.transpose_ && stride_ == o.stride_ && padding_ == o.padding_ && extra_ == o.extra_ &&
           operands_ == o.operands_;
  }

 private:
  bool transpose_;
  int stride_, padding_, extra_;
  ConvOperands operands_;
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
                    int stride, int padding, int extra, const std::optional<mx::array>& residual,
                    const std::optional<mx::array>& gamma, const std::optional<mx::array>& beta,
                    const std::optional<mx::array>& alpha, float eps) {
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
  std::vector<mx::array> inputs = {x, mx::contiguous(w, false, stream)};
  if (bias) {
    inputs.push_back(mx::contiguous(*bias, false, stream));
  }
  const mx::Shape out_shape = {x.shape(0), t_out, w.shape(0)};
  if (residual) {
    if (residual->dtype() != mx::float32 || residual->shape() != out_shape) {
      std::ostringstream msg;
      msg << (transpose ? "conv_transpose1d" : "conv1d") << ": the residual must be float32 with the output's shape ["
          << out_shape[0] << ", " << out_shape[1] << ", " << out_shape[2] << "]";
      throw std::invalid_argument(msg.str());
    }
    inputs.push_back(*residual);
  }
  if (gamma.has_value() != beta.has_value()) {
    throw std::invalid_argument("conv1d: the input AdaIN needs both gamma and beta");
  }
  const int batch = x.shape(0), c_in = x.shape(2);
  for (const auto* coefficient : {&gamma, &beta}) {
    if (*coefficient) {
      if ((*coefficient)->dtype() != mx::float32 || (*coefficient)->size() != static_cast<size_t>(batch) * c_in) {
        throw std::invalid_argument("conv1d: the input AdaIN's gamma and beta must be float32 [B, C_in]");
      }
      inputs.push_back(mx::contiguous(**coefficient, false, stream));
    }
  }
  if (alpha) {
    if (alpha->dtype() != mx::float32 || alpha->ndim() != 1 || alpha->shape(0) != c_in) {
      throw std::invalid_argument("conv1d: the input Snake's alpha must be float32 [C_in]");
    }
    inputs.push_back(mx::contiguous(*alpha, false, stream));
  }
  const ConvOperands operands{bias.has_value(), residual.has_value(), gamma.has_value(), alpha.has_value(), eps};
  return mx::array(out_shape, mx::float32,
                   std::make_shared<TapConv>(stream, transpose, stride, padding, extra, operands), std::move(inputs));
}

}  // namespace

mx::array conv1d(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias, int stride,
                 int padding, int dilation, const std::optional<mx::array>& residual,
                 const std::optional<mx::array>& gamma, const std::optional<mx::array>& beta,
                 const std::optional<mx::array>& alpha, float eps) {
  return make_conv(false, x, w, bias, stride, padding, dilation, residual, gamma, beta, alpha, eps);
}

mx::array conv_transpose1d(const mx::array& x, const mx::array& w, const std::optional<mx::array>& bias,
                           int stride, int padding, int output_padding) {
  return make_conv(true, x, w, bias, stride, padding, output_padding, std::nullopt, std::nullopt, std::nullopt,
                   std::nullopt, 0.0f);
}

}  // namespace mlx_tts
