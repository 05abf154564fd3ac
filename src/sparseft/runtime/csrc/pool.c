/* A tiny persistent thread pool (pthreads, no OpenMP: avoids a second OpenMP runtime next to torch's).
 * Workers spin for a short while after each job (decode layers come back-to-back, and waking a
 * sleeping thread costs tens of microseconds), then sleep on a condition variable so they do not steal
 * the core from torch between layers.
 *
 * Jobs claim their work in chunks from a shared counter, so the caller never waits for a worker that
 * has not started: when the caller has run out of chunks it closes the job and waits only for the
 * workers that joined it (and are finishing a chunk). A worker descheduled by another process (a busy
 * machine) therefore costs nothing: the caller does its share, and 2 threads are never much slower
 * than 1. Joining is a Dekker-style handshake on two sequentially consistent atomics: a worker
 * announces itself in `active` and then reads `closed`; the caller sets `closed` and then reads
 * `active`; one of them always sees the other. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "sparse_common.h"

#define MAX_THREADS 64
#define SPIN_NS 100000 /* 0.1 ms */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;  /* serializes pool_run callers */
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER; /* guards sleeping workers */
static pthread_cond_t wcv = PTHREAD_COND_INITIALIZER;
static int nworkers = 0;
static atomic_long gen = 0;
static atomic_int active = 0; /* workers inside the current job */
static atomic_int closed = 1; /* the current job takes no more workers */
static pool_fn job_fn;
static void *job_arg;
static int job_n;
static long start_gen[MAX_THREADS]; /* gen at each worker's creation: it waits for the next one */

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long wait_job(long seen) {
    long start = now_ns();
    for (int i = 0;; i++) {
        long g = atomic_load_explicit(&gen, memory_order_acquire);
        if (g != seen) return g;
        cpu_relax();
        if ((i & 255) == 255 && now_ns() - start > SPIN_NS) break;
    }
    pthread_mutex_lock(&wmu);
    long g;
    while ((g = atomic_load_explicit(&gen, memory_order_acquire)) == seen) pthread_cond_wait(&wcv, &wmu);
    pthread_mutex_unlock(&wmu);
    return g;
}

static void *worker(void *p) {
    int tid = (int)(intptr_t)p;
    long seen = start_gen[tid];
    for (;;) {
        seen = wait_job(seen);
        atomic_fetch_add(&active, 1);
        if (!atomic_load(&closed) && tid < job_n) job_fn(job_arg, tid, job_n);
        atomic_fetch_sub(&active, 1);
    }
    return NULL;
}

void pool_run(pool_fn fn, void *arg, int nthreads) {
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads <= 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&mu);
    while (nworkers < nthreads - 1) {
        pthread_t th;
        start_gen[nworkers + 1] = atomic_load(&gen);
        if (pthread_create(&th, NULL, worker, (void *)(intptr_t)(nworkers + 1)) != 0) break;
        pthread_detach(th);
        nworkers++;
    }
    if (nthreads > nworkers + 1) nthreads = nworkers + 1;
    job_fn = fn;
    job_arg = arg;
    job_n = nthreads;
    atomic_store(&closed, 0);
    pthread_mutex_lock(&wmu);
    atomic_fetch_add_explicit(&gen, 1, memory_order_release);
    pthread_cond_broadcast(&wcv);
    pthread_mutex_unlock(&wmu);
    fn(arg, 0, nthreads); /* returns when every chunk is claimed */
    atomic_store(&closed, 1);
    while (atomic_load(&active) > 0) cpu_relax();
    pthread_mutex_unlock(&mu);
}

/* ---- rows of a weight in chunks (pool_run_rows) ---- */
#define MAX_CHUNKS MAX_THREADS

typedef struct {
    rows_fn call;
    const void *arg;
    const int64_t *bounds; /* chunk c covers rows [bounds[c], bounds[c + 1]) */
    int64_t nchunks;
    atomic_llong next;     /* next chunk to take */
} rows_task;

static void run_rows(void *p, int t, int nt) {
    rows_task *tk = (rows_task *)p;
    (void)t;
    (void)nt;
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&tk->next, 1, memory_order_relaxed);
        if (c >= tk->nchunks) break;
        if (tk->bounds[c + 1] > tk->bounds[c]) tk->call(tk->arg, tk->bounds[c], tk->bounds[c + 1]);
    }
}

/* n chunks reading about the same number of bytes, boundaries rounded to multiples of align. */
static void split_rows(const int64_t *rowptr, int64_t M, int64_t KW, int esz, int align, int64_t n,
                       int64_t *bounds) {
    double total = (double)rowptr[M] * esz + (double)M * KW * 8;
    bounds[0] = 0;
    int64_t r = 0;
    for (int64_t t = 1; t < n; t++) {
        double target = total * (double)t / (double)n;
        while (r < M && (double)rowptr[r] * esz + (double)r * KW * 8 < target) r++;
        int64_t rb = (r + align / 2) / align * align;
        if (rb > M) rb = M;
        if (rb < bounds[t - 1]) rb = bounds[t - 1];
        bounds[t] = rb;
    }
    bounds[n] = M;
}

void pool_run_rows(rows_fn call, const void *arg, const int64_t *rowptr, int64_t M, int64_t KW, int esz,
                   int align, int nthreads) {
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads > (M + 3) / 4) nthreads = (int)((M + 3) / 4);
    if (nthreads < 1) nthreads = 1;
    int64_t bounds[MAX_CHUNKS + 1];
    /* One chunk per thread: each streams one contiguous range of rows (a hardware-prefetched stream whose
     * start is the only cold miss). Four chunks a thread, which balanced a late worker better, were slower
     * on every model (SmolLM2-135M decode step at 2 threads, Zen 5: 70% W8A8 2.90 -> 2.47 ms, 50% int8 5.27
     * -> 4.74 ms; 1.42x -> 1.59x and 1.53x -> 1.72x of one thread). A worker that never joins still costs
     * nothing: the caller takes its chunk too. */
    rows_task tk = {call, arg, bounds, nthreads, 0};
    if (tk.nchunks > (M + 3) / 4) tk.nchunks = (M + 3) / 4;
    if (tk.nchunks < 1) tk.nchunks = 1;
    split_rows(rowptr, M, KW, esz, align, tk.nchunks, bounds);
    pool_run(run_rows, &tk, nthreads);
}
