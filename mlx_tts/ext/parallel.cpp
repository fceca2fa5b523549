#include "parallel.h"

#include <dlfcn.h>
#include <sched.h>

#include <cstdlib>

namespace mlx_tts {

int worker_count() {
  static const int count = [] {
    if (const char* env = std::getenv("MLX_TTS_THREADS")) {
      if (int n = std::atoi(env); n > 0) {
        return n;
      }
    }
    cpu_set_t set;
    return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }();
  return count;
}

namespace {

// OpenBLAS's thread-count functions, present when mlx_tts.cpu_blas loaded an OpenBLAS globally.
struct BlasThreads {
  int (*get)() = nullptr;
  void (*set)(int) = nullptr;
  int saved = 1;
};

BlasThreads& blas_threads() {
  static BlasThreads threads = [] {
    BlasThreads t;
    t.get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    t.set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    return t.get && t.set ? t : BlasThreads{};
  }();
  return threads;
}

}  // namespace

// Called from MLX's CPU stream thread only, so the saved count needs no lock.
void set_blas_single_threaded(bool single) {
  BlasThreads& blas = blas_threads();
  if (!blas.get) {
    return;
  }
  if (single) {
    blas.saved = blas.get();
    if (blas.saved > 1) {
      blas.set(1);
    }
  } else if (blas.saved > 1) {
    blas.set(blas.saved);
  }
}

}  // namespace mlx_tts
