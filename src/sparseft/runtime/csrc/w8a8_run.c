/* The W8A8 matmul (int8 weights x int8 activations), called by module.c with the GIL released.
 *
 * Quantizes x per token to int8 (shifted to u8, see w8a8_common.h), splits the weight rows across the
 * shared thread pool (pool.c) and runs the chosen ISA's kernel. The rounding is the one of
 * sparseft.quant.activations (q = clamp(round_half_even(x / s), -127, 127), s = max|x| / 127 or 1 for
 * an all-zero token, or the given static scale), so the int8 activations are bit-identical to torch's
 * `quantize_per_token` / `quantize_activation`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"
#include "w8a8_common.h"

float w8a8_quantize_row_avx512(const float *x, int64_t K, float scale, uint8_t *out);

/* Ties to even for |v| <= 2^22 in the default rounding mode: adding then subtracting 1.5 * 2^23 leaves
 * the integer the addition rounded to (same result as nearbyintf, without a libm call). */
static inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

/* One token: u8 q + 128 for columns [0, K), 128 (q = 0) for the padding up to Kp; returns the scale. */
static float quantize_row(const float *x, int64_t sc, int64_t K, int64_t Kp, float static_scale, uint8_t *out) {
    float s = static_scale;
    if (!(s > 0.f)) {
        float amax = 0.f;
        for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[k * sc]));
        s = amax > 0.f ? amax / 127.f : 1.f;
    }
    for (int64_t k = 0; k < K; k++) {
        float v = x[k * sc] / s;
        v = v > 128.f ? 128.f : (v < -128.f ? -128.f : (v == v ? v : 0.f)); /* clip first: round_even needs |v| <= 2^22 */
        float q = round_even(v);
        q = q > 127.f ? 127.f : (q < -127.f ? -127.f : q);
        out[k] = (uint8_t)((int)q + 128);
    }
    memset(out + K, 128, (size_t)(Kp - K));
    return s;
}

typedef struct {
    w8_job job;
    w8_kernel kern;
} w8_task;

static void w8_run(const void *arg, int64_t r0, int64_t r1) {
    const w8_task *tk = (const w8_task *)arg;
    tk->kern(&tk->job, r0, r1);
}

int sp_run_w8a8(const sp_weight *w, const float *xp, int64_t N, int64_t sr, int64_t sc, void *y, int isa,
                int nthreads, float in_scale, int raw_acc) {
    const int64_t M = w->M, K = w->K, KW = w->KW, Kp = 64 * KW;
    w8_task tk;
    memset(&tk, 0, sizeof(tk));
    w8_job *j = &tk.job;
    j->M = M; j->K = K; j->KW = KW; j->Kp = Kp;
    j->mask = (const uint64_t *)w->mask;
    j->vals = (const int8_t *)w->vals;
    j->rowptr = w->rowptr;
    j->wscale = w->scales;
    j->rowsum = w->rowsum;
    j->full = w->full;
    j->bias = w->bias;
    j->N = N;
    if (raw_acc) j->acc_out = (int32_t *)y;
    else j->y = (float *)y;
    size_t xbytes = (size_t)(N * Kp), bytes = xbytes + sizeof(float) * (size_t)N + 64;
    uint8_t *buf = (uint8_t *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return -1;
    float *xs = (float *)(buf + (xbytes + 63) / 64 * 64);
    tk.kern = isa == ISA_AVX512 ? w8a8_avx512 : isa == ISA_AVX2 ? w8a8_avx2 : w8a8_portable;
    if (isa == ISA_AVX2) w8a8_avx2_init();
    for (int64_t n = 0; n < N; n++) {
        uint8_t *out = buf + n * Kp;
        if (isa == ISA_AVX512 && sc == 1) {
            xs[n] = w8a8_quantize_row_avx512(xp + n * sr, K, in_scale, out);
            memset(out + K, 128, (size_t)(Kp - K));
        } else {
            xs[n] = quantize_row(xp + n * sr, sc, K, Kp, in_scale, out);
        }
    }
    j->xu = buf;
    j->xscale = xs;
    pool_run_rows(w8_run, &tk, j->rowptr, M, KW, 1, 4, nthreads);
    free(buf);
    return 0;
}

/* Signed int8 activations for a dense integer product (runtime/dense_batch.py): the same rounding as the
 * kernels above, q[n][k] in [-127, 127] for contiguous rows (column stride 1), scales to xs[n]. */
void sp_quantize_rows(const float *xp, int64_t N, int64_t sr, int64_t K, int isa, float in_scale, int8_t *q,
                      float *xs) {
    for (int64_t n = 0; n < N; n++) {
        uint8_t *out = (uint8_t *)(q + n * K);
        xs[n] = isa == ISA_AVX512 ? w8a8_quantize_row_avx512(xp + n * sr, K, in_scale, out)
                                  : quantize_row(xp + n * sr, 1, K, K, in_scale, out);
        for (int64_t k = 0; k < K; k++) out[k] ^= 0x80; /* u = q + 128 -> q as a signed byte */
    }
}
