// conv1d with stride 1 as an overlap-save FFT convolution.
//
// A dilated convolution is `dilation` undilated ones, one per phase of the output (row t = q * dilation + r
// reads input rows (q + k) * dilation + r - padding), so each phase is cut into blocks of L = N - K + 1 output
// rows. A block's N input rows go through an N-point FFT per channel; in the frequency domain the convolution
// is, per frequency bin, one complex matrix product of every block's spectrum with the kernel's; an inverse FFT
// then gives N rows of which the first L are the block's output (the circular wrap-around lands on the rest).
// Per output row that is about (N / 2 + 1) * 4 / L real multiply-adds per weight of one tap, against K for one
// GEMM per tap: ~4.5x fewer for K = 11 and N = 64, ~3x for K = 7.
//
// The complex products are real GEMMs on stacked parts, [Xr | Xi] @ [[Mr, Mi], [-Mi, Mr]], one per bin, with
// the kernel's spectrum M computed per bin from the weights as it is needed (it would be (N / 2 + 1) * 4 times
// the weights' size if kept). The FFTs run over all channels of a row at once, so their loops are vector loops.

#include "fft_conv.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "norm_snake.h"
#include "parallel.h"
#include "simd.h"

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);

namespace mlx_tts {

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
// Kernels from this many taps on, with outputs of at least kMinRowTaps / K rows, run here: below that the
// kernel spectra cost more than they save (AVX2 measurements in bench/README.md: 7 taps break even at ~2000
// rows, 11 at ~1000-1500; 3 and 5 taps are faster as tap GEMMs).
constexpr int kMinTaps = 7, kMinRowTaps = 16000;
// Floats in one segment's spectra (input or output): 4 MB.
constexpr int kSegmentFloats = 1 << 20;

// The kernel spectra and the blocks' spectra live in buffers kept from call to call (they only grow: ~26 MB for
// Kokoro's widest convolutions, see block_size and kSegmentFloats): on a VM, faulting fresh pages in costs ~4 us
// each, as much as the FFTs of a whole convolution for a few MB. Convolutions take them one at a time.
struct Workspace {
  std::mutex lock;
  std::vector<float> kernel_spectra, x_spectra, y_spectra;
};

Workspace& workspace() {
  static Workspace* shared = new Workspace();  // never destroyed: a kernel may run while the process exits
  return *shared;
}

float* sized(std::vector<float>& buffer, size_t size) {
  if (buffer.size() < size) {
    buffer.resize(size);
  }
  return buffer.data();
}

// FFT size: 64 points, or 32 for wide convolutions (their kernel spectra, 4 * C_in * C_out floats per bin,
// would be 35 MB at 256 channels).
int block_size(const ConvShape& s) {
  int n = static_cast<long>(s.c_in) * s.c_out > 128 * 128 ? 32 : 64;
  while (n < 2 * s.kernel) {  // at least half of each block is output
    n *= 2;
  }
  return n;
}

// Twiddles and the bit-reversal permutation of an N-point radix-2 FFT.
struct Plan {
  int n;
  std::vector<int> reversed;
  std::vector<float> cos_, sin_;  // of 2 pi j / n, j < n / 2

  explicit Plan(int size) : n(size), reversed(size), cos_(size / 2), sin_(size / 2) {
    int bits = 0;
    while ((1 << bits) < n) {
      ++bits;
    }
    for (int i = 0; i < n; ++i) {
      int r = 0;
      for (int b = 0; b < bits; ++b) {
        r |= ((i >> b) & 1) << (bits - 1 - b);
      }
      reversed[i] = r;
    }
    for (int j = 0; j < n / 2; ++j) {
      cos_[j] = static_cast<float>(std::cos(2 * M_PI * j / n));
      sin_[j] = static_cast<float>(std::sin(2 * M_PI * j / n));
    }
  }
};

MLX_TTS_SIMD_CLONES
void butterfly(float* __restrict ar, float* __restrict ai, float* __restrict br, float* __restrict bi, float wr,
               float wi, int channels) {
  for (int c = 0; c < channels; ++c) {
    const float tr = br[c] * wr - bi[c] * wi, ti = br[c] * wi + bi[c] * wr;
    br[c] = ar[c] - tr;
    bi[c] = ai[c] - ti;
    ar[c] += tr;
    ai[c] += ti;
  }
}

// In-place FFT of rows [n][channels] (real and imaginary parts apart) whose rows are in bit-reversed order:
// forward with e^(-2 pi i / n), inverse (unscaled) with e^(+2 pi i / n).
void fft_rows(float* re, float* im, int channels, const Plan& plan, bool inverse) {
  for (int len = 2; len <= plan.n; len <<= 1) {
    const int half = len / 2, step = plan.n / len;
    for (int start = 0; start < plan.n; start += len) {
      for (int k = 0; k < half; ++k) {
        const float wr = plan.cos_[k * step], wi = inverse ? plan.sin_[k * step] : -plan.sin_[k * step];
        const size_t a = static_cast<size_t>(start + k) * channels, b = a + static_cast<size_t>(half) * channels;
        butterfly(re + a, im + a, re + b, im + b, wr, wi, channels);
      }
    }
  }
}

// The stacked kernel spectra of every bin, transposed for the GEMMs: in bin f, rows o < C_out hold
// [Mr | -Mi] of output o and rows C_out + o hold [Mi | Mr], where M[i][o] = sum_k W[o, k, i] e^(+2 pi i f k / N)
// (the conjugate of the kernel's spectrum: the convolution correlates). Mr and Mi are two small GEMMs per
// output channel, [bins, K] cosines or sines times W[o] [K, C_in], written into their rows of every bin.
void kernel_spectra(const ConvShape& s, const float* w, const Plan& plan, int bins, float* spectra) {
  const int ci = s.c_in, kernel = s.kernel;
  const size_t x_width = 2 * static_cast<size_t>(ci), spectrum_size = x_width * 2 * s.c_out;
  std::vector<float> cosines(static_cast<size_t>(bins) * kernel), sines(cosines.size());
  for (int f = 0; f < bins; ++f) {
    for (int k = 0; k < kernel; ++k) {
      const int j = (f * k) % plan.n, half = plan.n / 2;
      cosines[f * kernel + k] = j < half ? plan.cos_[j] : -plan.cos_[j - half];
      sines[f * kernel + k] = j < half ? plan.sin_[j] : -plan.sin_[j - half];
    }
  }
  parallel_for(s.c_out, 8, 64, [&](int o0, int o1) {
    for (int o = o0; o < o1; ++o) {
      const float* w_o = w + static_cast<size_t>(o) * kernel * ci;
      float* real_rows = spectra + o * x_width;
      float* imag_rows = spectra + (s.c_out + o) * x_width;
      cblas_sgemm(kRowMajor, kNoTrans, kNoTrans, bins, ci, kernel, 1.0f, cosines.data(), kernel, w_o, ci, 0.0f,
                  real_rows, static_cast<int>(spectrum_size));
      cblas_sgemm(kRowMajor, kNoTrans, kNoTrans, bins, ci, kernel, 1.0f, sines.data(), kernel, w_o, ci, 0.0f,
                  imag_rows, static_cast<int>(spectrum_size));
      for (int f = 0; f < bins; ++f) {
        float* real_row = real_rows + f * spectrum_size;
        float* imag_row = imag_rows + f * spectrum_size;
        for (int i = 0; i < ci; ++i) {
          real_row[ci + i] = -imag_row[i];
          imag_row[ci + i] = real_row[i];
        }
      }
    }
  });
}

}  // namespace

bool fft_conv_pays(const ConvShape& s) {
  return s.stride == 1 && s.kernel >= kMinTaps && s.t_out * s.kernel >= kMinRowTaps;
}

void fft_conv1d(const ConvShape& s, const float* x, const ChannelTransform* transform, const float* w,
                const float* bias, const float* residual, float* y) {
  const int n = block_size(s), bins = n / 2 + 1, d = s.dilation;
  const int rows = n - s.kernel + 1;  // output rows per block
  const Plan plan(n);
  // Blocks of every phase, in one list: phase r has ceil(q_out / rows) blocks, q_out = its output rows.
  std::vector<int> phase_first = {0}, phase_rows;
  for (int r = 0; r < std::min(d, s.t_out); ++r) {
    phase_rows.push_back((s.t_out - r + d - 1) / d);
    phase_first.push_back(phase_first.back() + (phase_rows.back() + rows - 1) / rows);
  }
  const int blocks = phase_first.back();
  auto phase_of = [&](int block) {
    return static_cast<int>(std::upper_bound(phase_first.begin(), phase_first.end(), block) - phase_first.begin()) - 1;
  };
  const int x_width = 2 * s.c_in, y_width = 2 * s.c_out;
  const size_t spectrum_size = static_cast<size_t>(x_width) * y_width;
  // Blocks go through in segments, so that their spectra stay a few MB whatever the input's length.
  const int segment = std::min(blocks, std::max(8, kSegmentFloats / (bins * std::max(x_width, y_width))));
  Workspace& work = workspace();
  std::lock_guard<std::mutex> hold(work.lock);
  float* spectra = sized(work.kernel_spectra, bins * spectrum_size);
  float* x_spectra = sized(work.x_spectra, static_cast<size_t>(bins) * segment * x_width);
  float* y_spectra = sized(work.y_spectra, static_cast<size_t>(bins) * segment * y_width);
  kernel_spectra(s, w, plan, bins, spectra);
  const float scale = 1.0f / n;
  for (int first = 0; first < blocks; first += segment) {
    const int count = std::min(segment, blocks - first);
    parallel_for(count, 1, 16, [&](int j0, int j1) {
      std::vector<float> re(static_cast<size_t>(n) * s.c_in), im(re.size());
      for (int j = j0; j < j1; ++j) {
        const int block = first + j, r = phase_of(block), q0 = (block - phase_first[r]) * rows;
        for (int i = 0; i < n; ++i) {
          const int t = (q0 + i) * d + r - s.padding;
          float* row = re.data() + static_cast<size_t>(plan.reversed[i]) * s.c_in;
          if (t >= 0 && t < s.t_in && transform) {
            transform->apply(x + static_cast<size_t>(t) * s.c_in, row, 1);
          } else if (t >= 0 && t < s.t_in) {
            std::copy_n(x + static_cast<size_t>(t) * s.c_in, s.c_in, row);
          } else {
            std::fill_n(row, s.c_in, 0.0f);
          }
        }
        std::fill(im.begin(), im.end(), 0.0f);
        fft_rows(re.data(), im.data(), s.c_in, plan, false);
        for (int f = 0; f < bins; ++f) {
          float* out = x_spectra + (static_cast<size_t>(f) * segment + j) * x_width;
          std::copy_n(re.data() + static_cast<size_t>(f) * s.c_in, s.c_in, out);
          std::copy_n(im.data() + static_cast<size_t>(f) * s.c_in, s.c_in, out + s.c_in);
        }
      }
    });
    parallel_for(bins, 1, 1, [&](int f0, int f1) {
      for (int f = f0; f < f1; ++f) {
        cblas_sgemm(kRowMajor, kNoTrans, kTrans, count, y_width, x_width, 1.0f,
                    x_spectra + static_cast<size_t>(f) * segment * x_width, x_width,
                    spectra + f * spectrum_size, x_width, 0.0f,
                    y_spectra + static_cast<size_t>(f) * segment * y_width, y_width);
      }
    });
    parallel_for(count, 1, 16, [&](int j0, int j1) {
      std::vector<float> re(static_cast<size_t>(n) * s.c_out), im(re.size());
      for (int j = j0; j < j1; ++j) {
        const int block = first + j, r = phase_of(block), q0 = (block - phase_first[r]) * rows;
        for (int f = 0; f < n; ++f) {  // the upper bins are the conjugates of the lower ones: the output is real
          const int source = f < bins ? f : n - f;
          const float* in = y_spectra + (static_cast<size_t>(source) * segment + j) * y_width;
          const size_t row = static_cast<size_t>(plan.reversed[f]) * s.c_out;
          std::copy_n(in, s.c_out, re.data() + row);
          const float sign = f < bins ? 1.0f : -1.0f;
          for (int o = 0; o < s.c_out; ++o) {
            im[row + o] = sign * in[s.c_out + o];
          }
        }
        fft_rows(re.data(), im.data(), s.c_out, plan, true);
        const int valid = std::min(rows, phase_rows[r] - q0);
        for (int i = 0; i < valid; ++i) {
          const size_t t = static_cast<size_t>((q0 + i) * d + r) * s.c_out;
          const float* value = re.data() + static_cast<size_t>(i) * s.c_out;
          for (int o = 0; o < s.c_out; ++o) {
            y[t + o] = value[o] * scale + (bias ? bias[o] : 0.0f) + (residual ? residual[t + o] : 0.0f);
          }
        }
      }
    });
  }
}

}  // namespace mlx_tts
