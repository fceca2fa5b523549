// Threads for the CPU kernels: one fork/join per operation on a pool sized to the CPUs this process may use.

#pragma once

#include <algorithm>
#include <atomic>
#include <functional>

namespace mlx_tts {

// $MLX_TTS_THREADS, else the number of CPUs in this process's affinity mask.
int worker_count();

// Sets a multithreaded OpenBLAS to one thread (true) and back to its previous count (false).
void set_blas_single_threaded(bool single);

// Runs `work` on the calling thread and on threads - 1 pool threads, and returns when all are done. The
// pool's threads are started once and sleep between jobs: starting threads per operation cost up to a
// millisecond each on a busy machine, as much as a whole small kernel.
void run_on_pool(int threads, const std::function<void()>& work);

// Runs body(begin, end) over [0, n) in chunks of about n / (4 * threads) items, but at least min_chunk and at
// most max_chunk, on up to worker_count() threads (the calling thread is one) that take the next chunk
// as they finish one: on a machine shared with other work, a thread that gets less CPU time does less.
// While it runs, a multithreaded OpenBLAS is set to one thread: BLAS calls from several threads at once
// would oversubscribe the cores.
template <class Body>
void parallel_for(int n, int min_chunk, int max_chunk, Body&& body) {
  const int workers = worker_count();
  const int chunk = std::clamp((n + 4 * workers - 1) / (4 * workers), std::max(min_chunk, 1),
                               std::max(max_chunk, min_chunk));
  const int threads = std::min(workers, (n + chunk - 1) / chunk);
  if (threads <= 1) {
    body(0, n);
    return;
  }
  std::atomic<int> next{0};
  auto work = [&] {
    for (int begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk)) {
      body(begin, std::min(n, begin + chunk));
    }
  };
  set_blas_single_threaded(true);
  run_on_pool(threads, work);
  set_blas_single_threaded(false);
}

}  // namespace mlx_tts
