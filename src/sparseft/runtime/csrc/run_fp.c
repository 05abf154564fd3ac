/* The fp32-activation matmul: prepares x in the layout the chosen kernel reads, picks the kernel by
 * ISA, batch and format, and splits the weight rows across the thread pool. Called by module.c with
 * the GIL released; sizes and ISA were checked there. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"

/* Smallest batch that runs the AMX kernels on the AVX-512 path, per format id; 0 = never (set_amx). */
int sp_amx_min_batch[FMT_COUNT];

typedef struct {
    const float *x;
    int64_t sr, sc; /* element strides of x (row, column) */
} xsrc;

static inline float xat(const xsrc *s, int64_t n, int64_t k) { return s->x[n * s->sr + k * s->sc]; }

/* [N][Kp] fp32, zero padded. */
static void prep_rows(const xsrc *s, int64_t N, int64_t K, int64_t Kp, float *out) {
    memset(out, 0, sizeof(float) * (size_t)(N * Kp));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) out[n * Kp + k] = xat(s, n, k);
}

/* [tiles][Kp][BTILE] fp32: BTILE batch rows side by side per column, zero padded. */
static void prep_tiles(const xsrc *s, int64_t N, int64_t K, int64_t Kp, float *out) {
    int64_t tiles = (N + BTILE - 1) / BTILE;
    memset(out, 0, sizeof(float) * (size_t)(tiles * Kp * BTILE));
    for (int64_t n = 0; n < N; n++) {
        float *o = out + (n / BTILE) * Kp * BTILE + (n % BTILE);
        for (int64_t k = 0; k < K; k++) o[k * BTILE] = xat(s, n, k);
    }
}

/* fp32 x de-interleaved per 32 columns: 16 even columns, then 16 odd (AVX-512 bf16 SpMV). */
static void prep_evenodd(const xsrc *s, int64_t K, int64_t Kp, float *out) {
    memset(out, 0, sizeof(float) * (size_t)Kp);
    for (int64_t k = 0; k < K; k++) out[(k & ~31) + ((k & 1) << 4) + ((k & 31) >> 1)] = xat(s, 0, k);
}

/* 16-bit symmetric quantization of x, stored as u8 digits lo = q & 255 and hi = (q >> 8) + 128. */
static void prep_q16(const xsrc *s, int64_t K, int64_t Kp, uint8_t *lo, uint8_t *hi, float *scale) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(xat(s, 0, k)));
    float sx = amax > 0.f ? amax / 32767.f : 1.f, inv = 1.f / sx;
    memset(lo, 0, (size_t)Kp);
    memset(hi, 128, (size_t)Kp);
    for (int64_t k = 0; k < K; k++) {
        int32_t q = (int32_t)lrintf(xat(s, 0, k) * inv);
        q = q > 32767 ? 32767 : (q < -32767 ? -32767 : q);
        int32_t l = q & 255;
        lo[k] = (uint8_t)l;
        hi[k] = (uint8_t)((q - l) / 256 + 128);
    }
    *scale = sx;
}

typedef struct {
    sp_job job;
    sp_kernel kern;
} task;

static void run_task(const void *arg, int64_t r0, int64_t r1) {
    const task *tk = (const task *)arg;
    tk->kern(&tk->job, r0, r1);
}

/* int4 (kern_int4.c): AVX-512 runs the batch-1 kernel token by token (the dense-row one for a weight with
 * every column stored and K even); other ISAs the portable kernel. */
static int run_i4(task *tk, const float *x, int64_t N, int64_t sr, int64_t sc, float *y, int isa, int nthreads) {
    sp_job *j = &tk->job;
    j->gscales = j->scales;
    j->scales = NULL; /* group scales are applied inside the kernels, not by sp_store */
    const int avx512 = isa == ISA_AVX512, full = avx512 && j->full && j->K % 2 == 0;
    size_t bytes = full ? sp_i4_full_xbytes(j->KW) : avx512 ? sp_i4_xbytes(j->Kp) : sizeof(float) * (size_t)(N * j->Kp);
    void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return -1;
    if (avx512) {
        tk->kern = full ? sp_spmv_i4_full_avx512 : sp_spmv_i4_avx512;
        j->N = 1;
        for (int64_t n = 0; n < N; n++) {
            j->y = y + n * j->M;
            if (full) sp_i4_prep_x_full(j, x + n * sr, sc, buf);
            else sp_i4_prep_x(j, x + n * sr, sc, buf);
            pool_run_rows(run_task, tk, j->rowptr, j->M, j->KW, 1, 4, nthreads);
        }
    } else {
        xsrc src = {x, sr, sc};
        tk->kern = sp_spmm_portable;
        prep_rows(&src, N, j->K, j->Kp, (float *)buf);
        j->x32 = (const float *)buf;
        pool_run_rows(run_task, tk, j->rowptr, j->M, j->KW, 1, 4, nthreads);
    }
    free(buf);
    return 0;
}

int sp_run_fp(const sp_weight *w, const float *x, int64_t N, int64_t sr, int64_t sc, float *y, int isa,
              int nthreads) {
    const int fmt = w->fmt, delta = w->delta;
    const int64_t M = w->M, K = w->K, KW = w->KW, Kp = 64 * KW;
    task tk;
    memset(&tk, 0, sizeof(tk));
    sp_job *j = &tk.job;
    j->fmt = fmt;
    j->M = M; j->K = K; j->KW = KW; j->Kp = Kp;
    j->mask = (const uint64_t *)w->mask;
    j->vals = w->vals;
    j->rowptr = w->rowptr;
    j->scales = w->scales;
    j->rowsum = w->rowsum;
    j->full = w->full;
    j->bias = w->bias;
    j->N = N;
    j->y = y;
    if (fmt == FMT_I4) return run_i4(&tk, x, N, sr, sc, y, isa, nthreads);
    xsrc src = {x, sr, sc};
    /* AMX (set_amx): bf16 / int8 values, bitmask index; int8: int32 sums exact while K * 127 * 255 < 2^31. */
    int use_amx = isa == ISA_AVX512 && !delta && sp_amx_min_batch[fmt] > 0 && N >= sp_amx_min_batch[fmt] &&
                  (fmt != FMT_I8 || K <= 65536);
    /* Batch-1 expand-load kernels; VNNI int32 partial sums stay exact only while K * 127 * 255 < 2^31. */
    int use_spmv = !delta && isa == ISA_AVX512 && N == 1 && (fmt != FMT_I8 || K <= 65536);
    int64_t tiles = (N + BTILE - 1) / BTILE;
    size_t bytes = use_amx ? sp_amx_xbytes(fmt, N, Kp) : use_spmv ? (size_t)Kp * 4 + 64
                   : (!delta && isa == ISA_AVX512 && N > SMALL_BATCH_MAX) ? sizeof(float) * (size_t)(tiles * Kp * BTILE)
                                                                : sizeof(float) * (size_t)(N * Kp);
    void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return -1;

    if (use_amx) {
        tk.kern = sp_spmm_amx;
        sp_amx_prep_x(j, src.x, sr, sc, buf, nthreads);
    } else if (use_spmv) {
        tk.kern = sp_spmv_avx512;
        if (fmt == FMT_BF16) {
            prep_evenodd(&src, K, Kp, (float *)buf);
            j->x32 = (const float *)buf;
        } else if (fmt == FMT_I8) {
            uint8_t *lo = (uint8_t *)buf, *hi = lo + Kp;
            float *sxp = (float *)(hi + Kp);
            prep_q16(&src, K, Kp, lo, hi, sxp);
            j->xq_lo = lo; j->xq_hi = hi; j->xscale = sxp;
        } else {
            prep_rows(&src, 1, K, Kp, (float *)buf);
            j->x32 = (const float *)buf;
        }
    } else if (delta) {
        tk.kern = sp_delta_portable;
        prep_rows(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    } else if (isa == ISA_AVX512 && N > SMALL_BATCH_MAX) {
        tk.kern = sp_spmm_bcast_avx512;
        prep_tiles(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    } else {
        tk.kern = isa == ISA_AVX512 ? sp_spmm_small_avx512 : isa == ISA_AVX2 ? sp_spmm_avx2 : sp_spmm_portable;
        prep_rows(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    }
    /* AMX works on 16-row tiles */
    pool_run_rows(run_task, &tk, j->rowptr, M, KW, SP_ESIZE(fmt), use_amx ? 16 : 4, nthreads);
    free(buf);
    return 0;
}
