/* Portable C kernel: any batch size, any CPU. Reference-grade, not fast. Group scales (int4) multiply each
 * mask word's partial sum (a group is two words); per-row scales are applied by sp_store. */
#include "sparse_common.h"

void sp_spmm_portable(const sp_job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *m = j->mask + r * j->KW;
        const float *gs = j->gscales ? j->gscales + r * I4_GROUPS(j->KW) : NULL;
        for (int64_t n = 0; n < j->N; n++) {
            const float *x = j->x32 + n * j->Kp;
            int64_t i = j->rowptr[r];
            float acc = 0.f;
            for (int64_t w = 0; w < j->KW; w++) {
                uint64_t b = m[w];
                float part = 0.f;
                while (b) {
                    int c = __builtin_ctzll(b);
                    b &= b - 1;
                    part += sp_load_val(j->fmt, j->vals, i++) * x[64 * w + c];
                }
                acc += gs ? part * gs[w / 2] : part;
            }
            sp_store(j, n, r, acc);
        }
    }
}
