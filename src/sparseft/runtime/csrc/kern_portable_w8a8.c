/* Portable C W8A8 kernel (any CPU): the same integer math as the SIMD paths, one value at a time. */
#include "w8a8_common.h"

void w8a8_portable(const w8_job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *m = j->mask + r * j->KW;
        for (int64_t n = 0; n < j->N; n++) {
            const uint8_t *x = j->xu + n * j->Kp;
            const int8_t *v = j->vals + j->rowptr[r];
            int64_t raw = 0;
            for (int64_t w = 0; w < j->KW; w++) {
                uint64_t b = m[w];
                while (b) {
                    int c = __builtin_ctzll(b);
                    b &= b - 1;
                    raw += (int32_t)x[64 * w + c] * (int32_t)*v++;
                }
            }
            w8_store(j, n, r, raw);
        }
    }
}
