/* W8A8 kernels: sparse bitmask int8 weights x int8 activations, int32 accumulation.
 *
 * Weights are the runtime's int8 bitmask format (see sparse_common.h / format.py): per-row fp32 scale
 * w_scale[r] and rowsum[r] = sum of row r's int8 values. Activations are quantized per token (dynamic:
 * s = max|x| / 127) or with one fixed scale (static), symmetric int8 q in [-127, 127], then stored
 * shifted as u = q + 128 in [1, 255] (u8): vpdpbusd multiplies an unsigned by a signed byte, and the
 * weights (signed, straight from the format) are the signed side. The shift is undone once per output:
 *     acc = sum_k q[k] w[k] = sum_k u[k] w[k] - 128 * rowsum[r]         (exact in int32 for K <= 65536)
 *     y[n][r] = (float)acc * x_scale[n] * w_scale[r] + bias[r]
 * Every ISA path computes the same int32 acc bit for bit (integer math only) and the same epilogue.
 */
#ifndef SPARSEFT_W8A8_COMMON_H
#define SPARSEFT_W8A8_COMMON_H

#include <stdint.h>
#include <stddef.h>

/* |acc| of the shifted sum stays below 2^31 while K * 255 * 127 < 2^31. */
#define W8A8_MAX_K 65536

typedef struct {
    int64_t M, K, KW, Kp;   /* Kp = 64 * KW */
    const uint64_t *mask;
    const int8_t *vals;     /* packed, with 64 bytes of padding after the last value */
    const int64_t *rowptr;
    const float *wscale;    /* [M] */
    const int32_t *rowsum;  /* [M] */
    const float *bias;      /* [M] or NULL */
    int full;               /* sp_weight.full: every column stored (no mask read at batch 1) */
    int64_t N;
    const uint8_t *xu;      /* [N][Kp] q + 128; padding columns hold 128 (q = 0) */
    const float *xscale;    /* [N] */
    float *y;               /* [N][M] fp32 output, or NULL when acc_out is set */
    int32_t *acc_out;       /* [N][M] raw int32 accumulators (tests), or NULL */
} w8_job;

/* y[n][r] (or acc_out) from the shifted sum `raw` = sum_k u[k] w[k]. */
static inline void w8_store(const w8_job *j, int64_t n, int64_t r, int64_t raw) {
    int32_t acc = (int32_t)(raw - 128 * (int64_t)j->rowsum[r]);
    if (j->acc_out) {
        j->acc_out[n * j->M + r] = acc;
        return;
    }
    float v = (float)acc * j->xscale[n] * j->wscale[r];
    if (j->bias) v += j->bias[r];
    j->y[n * j->M + r] = v;
}

typedef void (*w8_kernel)(const w8_job *j, int64_t r0, int64_t r1);

void w8a8_portable(const w8_job *j, int64_t r0, int64_t r1);
void w8a8_avx2_init(void);
void w8a8_avx2(const w8_job *j, int64_t r0, int64_t r1);
void w8a8_avx512(const w8_job *j, int64_t r0, int64_t r1);

#endif
