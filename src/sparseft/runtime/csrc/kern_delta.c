/* Kernel of the high-sparsity "delta" index: one uint8 gap per stored value (column = previous + gap + 1),
 * so each entry costs 1 index byte instead of the bitmask's 1 bit per weight. Scalar C: the running
 * column is a serial prefix sum, and at the sparsities this index is for (> 90-95% zeros) the bytes,
 * not the arithmetic, set the time. Any batch size; x is [N][Kp] fp32. */
#include "sparse_common.h"

#define ROW_LOOP(LOAD)                                                       \
    do {                                                                     \
        int64_t c = -1;                                                      \
        float a0 = 0.f, a1 = 0.f;                                            \
        int64_t i = i0;                                                      \
        for (; i + 2 <= i1; i += 2) {                                        \
            c += (int64_t)gaps[i] + 1;                                       \
            a0 += LOAD(i) * x[c];                                            \
            c += (int64_t)gaps[i + 1] + 1;                                   \
            a1 += LOAD(i + 1) * x[c];                                        \
        }                                                                    \
        if (i < i1) {                                                        \
            c += (int64_t)gaps[i] + 1;                                       \
            a0 += LOAD(i) * x[c];                                            \
        }                                                                    \
        acc = a0 + a1;                                                       \
    } while (0)

void sp_delta_portable(const sp_job *j, int64_t r0, int64_t r1) {
    const uint8_t *gaps = (const uint8_t *)j->mask;
    const float *vf = (const float *)j->vals;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i0 = j->rowptr[r], i1 = j->rowptr[r + 1];
        for (int64_t n = 0; n < j->N; n++) {
            const float *x = j->x32 + n * j->Kp;
            float acc;
#define LF(i) vf[i]
#define LV(i) sp_load_val(j->fmt, j->vals, i)
            if (j->fmt == FMT_F32) ROW_LOOP(LF); /* the common case without the format switch */
            else ROW_LOOP(LV);
            sp_store(j, n, r, acc);
        }
    }
}
