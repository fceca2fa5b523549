/* Exports the three CBLAS entry points that libmlx calls under their standard names, forwarding them to
   scipy-openblas32, whose symbols carry a `scipy_` prefix. Loaded into the global symbol scope before
   mlx.core, it makes libmlx's GEMMs run on OpenBLAS instead of the reference BLAS in the mlx-cpu wheel.

   Threads: OpenBLAS splits a GEMM statically over its threads, so on a machine shared with other work one
   descheduled thread stalls the whole call (a 1 x 1024 x 1024 GEMV took 20 ms instead of 0.1 ms). Here
   OpenBLAS stays single-threaded, and sgemm calls big enough to pay for it are cut into a few column (or
   row) blocks per thread that a small pool of threads takes one at a time, the caller included: a late
   thread just takes fewer blocks. `openblas_set_num_threads` / `openblas_get_num_threads` are exported for that pool (the
   mlx_tts kernels set it to 1 while they run their own threads). With OPENBLAS_NUM_THREADS set, the pool
   is off and OpenBLAS threads as it was told. */

#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                       float *, int);
void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double *, int, const double *, int, double,
                       double *, int);
void scipy_cblas_cgemm(int, int, int, int, int, int, const void *, const void *, int, const void *, int,
                       const void *, void *, int);
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);

enum { ROW_MAJOR = 101, NO_TRANS = 111 };
/* Below this many multiply-adds a call runs on one thread: the handoff would cost more. */
#define MIN_PARALLEL_MACS (1L << 21)
/* Blocks per thread: a few, so that a late thread still gets a share, but each block repacks the whole
   other operand, so not many. At least MIN_BLOCK columns (or rows) per block. */
#define BLOCKS_PER_THREAD 4
#define MIN_BLOCK 64
#define SPIN_NS 200000L

struct sgemm_call {
    int order, trans_a, trans_b, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int lda, ldb, ldc;
    int split_columns, block, blocks;
    atomic_int next;
};

static int pool_threads = 1;              /* threads for one sgemm, the caller included */
static int openblas_threads_itself;       /* OPENBLAS_NUM_THREADS was set: no pool */
static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static struct sgemm_call *job;
static int wanted, running, started;
static atomic_ulong generation;

static void run_blocks(struct sgemm_call *call) {
    for (int block = atomic_fetch_add(&call->next, 1); block < call->blocks; block = atomic_fetch_add(&call->next, 1)) {
        const int lo = block * call->block;
        if (call->split_columns) {
            const int width = call->n - lo < call->block ? call->n - lo : call->block;
            const float *b = call->trans_b == NO_TRANS ? call->b + lo : call->b + (long)lo * call->ldb;
            scipy_cblas_sgemm(call->order, call->trans_a, call->trans_b, call->m, width, call->k, call->alpha,
                              call->a, call->lda, b, call->ldb, call->beta, call->c + lo, call->ldc);
        } else {
            const int height = call->m - lo < call->block ? call->m - lo : call->block;
            const float *a = call->trans_a == NO_TRANS ? call->a + (long)lo * call->lda : call->a + lo;
            scipy_cblas_sgemm(call->order, call->trans_a, call->trans_b, height, call->n, call->k, call->alpha, a,
                              call->lda, call->b, call->ldb, call->beta, call->c + (long)lo * call->ldc, call->ldc);
        }
    }
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *serve(void *unused) {
    (void)unused;
    unsigned long seen = 0;
    for (;;) {
        /* Spin a little before sleeping: GEMMs come in bursts, and waking a thread can take a millisecond. */
        const long spin_until = now_ns() + SPIN_NS;
        while (atomic_load(&generation) == seen && now_ns() < spin_until) {
            sched_yield();
        }
        pthread_mutex_lock(&lock);
        while (atomic_load(&generation) == seen) {
            pthread_cond_wait(&wake, &lock);
        }
        seen = atomic_load(&generation);
        if (wanted == 0) { /* the caller finished this one alone */
            pthread_mutex_unlock(&lock);
            continue;
        }
        --wanted;
        ++running;
        struct sgemm_call *call = job;
        pthread_mutex_unlock(&lock);
        run_blocks(call);
        pthread_mutex_lock(&lock);
        if (--running == 0) {
            pthread_cond_broadcast(&done);
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void start_helpers(int helpers) {
    for (; started < helpers; ++started) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, serve, NULL) != 0) {
            break;
        }
        pthread_detach(thread);
    }
}

/* The CPUs this process may run on (on Linux its affinity mask: a container's or taskset's share). */
static int cpu_count(void) {
#ifdef __linux__
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0) {
        return CPU_COUNT(&cpus);
    }
#endif
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

__attribute__((constructor)) static void init(void) {
    if (getenv("OPENBLAS_NUM_THREADS") != NULL) {
        openblas_threads_itself = 1;
        return;
    }
    scipy_openblas_set_num_threads(1);
    const char *threads = getenv("MLX_TTS_THREADS");
    pool_threads = threads && atoi(threads) > 0 ? atoi(threads) : cpu_count();
}

int openblas_get_num_threads(void) {
    return openblas_threads_itself ? scipy_openblas_get_num_threads() : pool_threads;
}

void openblas_set_num_threads(int threads) {
    if (openblas_threads_itself) {
        scipy_openblas_set_num_threads(threads);
    } else {
        pool_threads = threads > 0 ? threads : 1;
    }
}

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    /* Split the larger of m and n: each block repacks the operand along the other one. */
    const int split_columns = n >= m, length = split_columns ? n : m;
    int blocks = pool_threads * BLOCKS_PER_THREAD;
    if (blocks > length / MIN_BLOCK) {
        blocks = length / MIN_BLOCK;
    }
    const int block = blocks > 0 ? (length + blocks - 1) / blocks : length;
    blocks = (length + block - 1) / block;
    const int threads = pool_threads < blocks ? pool_threads : blocks;
    if (threads <= 1 || order != ROW_MAJOR || (long)m * n * k < MIN_PARALLEL_MACS ||
        pthread_mutex_trylock(&job_lock) != 0) { /* busy: called from a pool thread or another stream */
        scipy_cblas_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    struct sgemm_call call = {order, ta, tb, m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, split_columns, block, blocks, 0};
    pthread_mutex_lock(&lock);
    start_helpers(threads - 1);
    job = &call;
    wanted = threads - 1;
    running = 0;
    atomic_fetch_add(&generation, 1);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    run_blocks(&call);
    pthread_mutex_lock(&lock);
    wanted = 0; /* helpers that have not woken up yet are not waited for */
    while (running > 0) {
        pthread_cond_wait(&done, &lock);
    }
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&job_lock);
}

void cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc) {
    scipy_cblas_dgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int lda,
                 const void *b, int ldb, const void *beta, void *c, int ldc) {
    scipy_cblas_cgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
