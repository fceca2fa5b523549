#include "parallel.h"

#include <dlfcn.h>
#ifdef __linux__
#include <sched.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace mlx_tts {

int worker_count() {
  static const int count = [] {
    if (const char* env = std::getenv("MLX_TTS_THREADS")) {
      if (int n = std::atoi(env); n > 0) {
        return n;
      }
    }
#ifdef __linux__
    // The CPUs this process may run on (a container's or taskset's share), not all the machine's.
    if (cpu_set_t set; sched_getaffinity(0, sizeof(set), &set) == 0) {
      return CPU_COUNT(&set);
    }
#endif
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
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

// Worker threads waiting for jobs; never destroyed (the threads sleep until the process exits).
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) {
      std::thread([this] { serve(); }).detach();
    }
  }

  // Runs `work` on `helpers` pool threads besides the caller; one job at a time.
  void run(int helpers, const std::function<void()>& work) {
    std::lock_guard<std::mutex> one_job(job_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      work_ = &work;
      wanted_ = helpers;
      running_ = 0;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work();
    // The work is all taken once the caller's share returns: helpers that have not woken up yet (late on a
    // busy machine, or absent in a forked child) are not waited for.
    std::unique_lock<std::mutex> lock(mutex_);
    wanted_ = 0;
    done_.wait(lock, [this] { return running_ == 0; });
  }

 private:
  void serve() {
    std::uint64_t seen = 0;
    while (true) {
      // Spin a little before sleeping: kernels come in bursts, and waking a sleeping thread can take a
      // millisecond on a busy machine.
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until) {
        std::this_thread::yield();
      }
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
      seen = generation_.load(std::memory_order_relaxed);
      if (wanted_ == 0) {  // the caller finished this job alone
        continue;
      }
      --wanted_;
      ++running_;
      const std::function<void()>* work = work_;
      lock.unlock();
      (*work)();
      lock.lock();
      if (--running_ == 0) {
        done_.notify_all();
      }
    }
  }

  static constexpr std::chrono::microseconds kSpin{200};
  std::mutex job_mutex_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void()>* work_ = nullptr;
  int wanted_ = 0, running_ = 0;
  std::atomic<std::uint64_t> generation_{0};
};

void run_on_pool(int threads, const std::function<void()>& work) {
  static Pool* pool = new Pool(worker_count() - 1);
  pool->run(std::min(threads, worker_count()) - 1, work);
}

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
