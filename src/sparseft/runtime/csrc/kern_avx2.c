/* AVX2 + FMA kernel (any batch size). AVX2 has no expand instruction, so each 8-column mask byte
 * indexes a table of permutations that moves the packed values to their columns; a second table
 * zeroes the empty lanes. Values are widened to fp32 before the permutation. */
#include <immintrin.h>
#include "sparse_common.h"

#if defined(__x86_64__) || defined(__i386__)
#define TAVX2 __attribute__((target("avx2,fma,f16c,popcnt")))

static int32_t perm_tbl[256][8] __attribute__((aligned(32)));
static int32_t lane_tbl[256][8] __attribute__((aligned(32)));
/* Filled once by sp_avx2_init() at module import, before any thread runs a kernel. */
void sp_avx2_init(void) {
    for (int k = 0; k < 256; k++) {
        int rank = 0;
        for (int i = 0; i < 8; i++) {
            int on = (k >> i) & 1;
            perm_tbl[k][i] = on ? rank : 0;
            lane_tbl[k][i] = on ? -1 : 0;
            rank += on;
        }
    }
}

/* 8 packed values of the row's format, widened to fp32 (fp16: vcvtph2ps, F16C) (may read past the row: values are padded). */
static inline TAVX2 __m256 load8(int fmt, const void *v) {
    if (fmt == FMT_F32) return _mm256_loadu_ps((const float *)v);
    if (fmt == FMT_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)v)), 16));
    if (fmt == FMT_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)v));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)v)));
}

static inline TAVX2 __m256 decode8(int fmt, unsigned k, const char **v, int esize) {
    __m256 raw = load8(fmt, *v);
    __m256i perm = _mm256_load_si256((const __m256i *)perm_tbl[k]);
    __m256 on = _mm256_castsi256_ps(_mm256_load_si256((const __m256i *)lane_tbl[k]));
    *v += esize * __builtin_popcount(k);
    return _mm256_and_ps(_mm256_permutevar8x32_ps(raw, perm), on);
}

static inline TAVX2 float hsum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row against nb (<= 4) rows of x: each decoded vector is reused nb times. */
static inline __attribute__((always_inline)) TAVX2 void row_nb(const sp_job *j, int64_t r, int64_t n0, int nb) {
    const int fmt = j->fmt, es = SP_ESIZE(fmt);
    const char *v = (const char *)j->vals + es * j->rowptr[r];
    const uint64_t *m = j->mask + r * j->KW;
    const float *x = j->x32 + n0 * j->Kp;
    __m256 acc[4];
    for (int n = 0; n < nb; n++) acc[n] = _mm256_setzero_ps();
    for (int64_t w = 0; w < j->KW; w++) {
        uint64_t b = m[w];
        if (!b) continue;
        for (int q = 0; q < 8; q++) {
            unsigned k = (unsigned)(b >> (8 * q)) & 0xff;
            if (!k) continue;
            __m256 wv = decode8(fmt, k, &v, es);
            for (int n = 0; n < nb; n++)
                acc[n] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + n * j->Kp + 64 * w + 8 * q), acc[n]);
        }
    }
    for (int n = 0; n < nb; n++) sp_store(j, n0 + n, r, hsum(acc[n]));
}

TAVX2 void sp_spmm_avx2(const sp_job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t n0 = 0; n0 < j->N; n0 += 4) {
            int64_t nb = j->N - n0 < 4 ? j->N - n0 : 4;
            switch (nb) {
            case 1: row_nb(j, r, n0, 1); break;
            case 2: row_nb(j, r, n0, 2); break;
            case 3: row_nb(j, r, n0, 3); break;
            default: row_nb(j, r, n0, 4); break;
            }
        }
    }
}
#else
void sp_avx2_init(void) {}
void sp_spmm_avx2(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
#endif
