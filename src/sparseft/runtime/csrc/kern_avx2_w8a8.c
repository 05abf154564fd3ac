/* AVX2 W8A8 kernel (no VNNI, no expand): each 8-column mask byte indexes a permutation table that moves
 * the packed int8 values (widened to int32) to their columns; vpmaddwd then multiplies them with the
 * shifted activations widened to int32. Exact: the weight's int32 lane is w sign-extended and the
 * activation's high 16 bits are 0, so the pair product lo*lo + hi*hi is w * u. (vpmaddubsw would
 * saturate at 16 bits.) Up to 4 tokens share each decoded vector. */
#include <immintrin.h>
#include <pthread.h>
#include "w8a8_common.h"

#if defined(__x86_64__) || defined(__i386__)
#define TAVX2 __attribute__((target("avx2,popcnt")))
#define INLINE static inline __attribute__((always_inline))

static int32_t perm_tbl[256][8] __attribute__((aligned(32)));
static int32_t lane_tbl[256][8] __attribute__((aligned(32)));
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void fill_tables(void) {
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

/* Called by the binding before each AVX2 job; fills the tables once (callers may race). */
void w8a8_avx2_init(void) { pthread_once(&tables_once, fill_tables); }

INLINE TAVX2 int64_t hsum(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

INLINE TAVX2 void row_nb(const w8_job *j, int64_t r, int64_t n0, const int nb) {
    const int8_t *v = j->vals + j->rowptr[r];
    const uint64_t *m = j->mask + r * j->KW;
    const uint8_t *x = j->xu + n0 * j->Kp;
    __m256i acc[4];
    for (int n = 0; n < nb; n++) acc[n] = _mm256_setzero_si256();
    for (int64_t w = 0; w < j->KW; w++) {
        uint64_t b = m[w];
        if (!b) continue;
        for (int q = 0; q < 8; q++) {
            unsigned k = (unsigned)(b >> (8 * q)) & 0xff;
            if (!k) continue;
            /* 8 bytes from v: within the values' 64 bytes of padding at the end */
            __m256i raw = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)v));
            __m256i perm = _mm256_load_si256((const __m256i *)perm_tbl[k]);
            __m256i on = _mm256_load_si256((const __m256i *)lane_tbl[k]);
            __m256i wv = _mm256_and_si256(_mm256_permutevar8x32_epi32(raw, perm), on);
            v += __builtin_popcount(k);
            for (int n = 0; n < nb; n++) {
                __m256i xv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + n * j->Kp + 64 * w + 8 * q)));
                acc[n] = _mm256_add_epi32(acc[n], _mm256_madd_epi16(wv, xv));
            }
        }
    }
    for (int n = 0; n < nb; n++) w8_store(j, n0 + n, r, hsum(acc[n]));
}

TAVX2 void w8a8_avx2(const w8_job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t n0 = 0; n0 < j->N; n0 += 4) {
            switch (j->N - n0 < 4 ? j->N - n0 : 4) {
            case 1: row_nb(j, r, n0, 1); break;
            case 2: row_nb(j, r, n0, 2); break;
            case 3: row_nb(j, r, n0, 3); break;
            default: row_nb(j, r, n0, 4); break;
            }
        }
    }
}
#else
void w8a8_avx2_init(void) {}
void w8a8_avx2(const w8_job *j, int64_t r0, int64_t r1) { w8a8_portable(j, r0, r1); }
#endif
