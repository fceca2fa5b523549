// Threads for the CPU kernels: one fork/join per operation, sized to the CPUs this process may use.

#pragma once

#include <algorithm>
#include <thread>
#include <vector>

namespace mlx_tts {

// $MLX_TTS_THREADS, else the number of CPUs in this process's affinity mask.
int worker_count();

// Runs body(begin, end) over [0, n) split into at most worker_count() contiguous ranges of at least
// min_per_thread items, the first on the calling thread. While it runs, a multithreaded OpenBLAS is set to
// one thread: BLAS calls from several threads at once would oversubscribe the cores.
template <class Body>
void parallel_for(int n, int min_per_thread, Body&& body);

void set_blas_single_threaded(bool single);

template <class Body>
void parallel_for(int n, int min_per_thread, Body&& body) {
  const int threads = std::clamp(n / std::max(min_per_thread, 1), 1, worker_count());
  if (threads == 1) {
    body(0, n);
    return;
  }
  set_blas_single_threaded(true);
  const int chunk = (n + threads - 1) / threads;
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) {
    workers.emplace_back([&body, i, chunk, n] { body(i * chunk, std::min(n, (i + 1) * chunk)); });
  }
  body(0, std::min(n, chunk));
  for (auto& worker : workers) {
    worker.join();
  }
  set_blas_single_threaded(false);
}

}  // namespace mlx_tts
