/* AVX-512 batch > 1 kernels.
 *   small: each 64-column mask word is decoded once into four fp32 vectors and reused for up to 16 rows
 *          of x (dense FMAs over the decoded word, zeros included).
 *   bcast: for larger batches x is transposed into tiles of 32 batch rows ([Kp][32]); each weight row
 *          is turned once into a list of (column, fp32 value) and every nonzero costs one FMA of a
 *          broadcast value against the 32 batch lanes of its column, so zeros cost nothing. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"

#if defined(__x86_64__)
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,popcnt,bmi,bmi2,fma")))
#define INLINE static inline __attribute__((always_inline))
/* Rows of x sharing one decoded word: 16 accumulators + 4 decoded vectors fit the 32 zmm registers. */
#define SMALL_TILE 16

/* Decode one 64-column mask word of a row into 4 fp32 vectors; advances *v past the used values. */
INLINE T512 void decode64(int fmt, uint64_t b, const char **v, __m512 out[4]) {
    if (fmt == FMT_F32) {
        const float *p = (const float *)*v;
        for (int q = 0; q < 4; q++) {
            __mmask16 k = (__mmask16)(b >> (16 * q));
            out[q] = _mm512_maskz_expandloadu_ps(k, p);
            p += __builtin_popcount(k);
        }
        *v = (const char *)p;
    } else if (fmt == FMT_F16) {
        const uint16_t *p = (const uint16_t *)*v;
        for (int h = 0; h < 2; h++) {
            __mmask32 k = (__mmask32)(b >> (32 * h));
            __m512i e = _mm512_maskz_expandloadu_epi16(k, p);
            p += __builtin_popcount(k);
            out[2 * h] = _mm512_cvtph_ps(_mm512_castsi512_si256(e));
            out[2 * h + 1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(e, 1));
        }
        *v = (const char *)p;
    } else if (fmt == FMT_BF16) {
        const uint16_t *p = (const uint16_t *)*v;
        for (int h = 0; h < 2; h++) {
            __mmask32 k = (__mmask32)(b >> (32 * h));
            __m512i e = _mm512_maskz_expandloadu_epi16(k, p);
            p += __builtin_popcount(k);
            out[2 * h] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(e)), 16));
            out[2 * h + 1] = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(e, 1)), 16));
        }
        *v = (const char *)p;
    } else {
        const int8_t *p = (const int8_t *)*v;
        __m512i e = _mm512_maskz_expandloadu_epi8(b, p);
        *v = (const char *)(p + __builtin_popcountll(b));
        out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(e)));
        out[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(e, 1)));
        out[2] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(e, 2)));
        out[3] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(e, 3)));
    }
}

INLINE T512 void small_row(const sp_job *j, int64_t r, int64_t n0, int nb) {
    const char *v = (const char *)j->vals + SP_ESIZE(j->fmt) * j->rowptr[r];
    const uint64_t *m = j->mask + r * j->KW;
    const float *x = j->x32 + n0 * j->Kp;
    __m512 acc[SMALL_TILE];
    for (int n = 0; n < nb; n++) acc[n] = _mm512_setzero_ps();
    for (int64_t w = 0; w < j->KW; w++) {
        uint64_t b = m[w];
        if (!b) continue;
        __m512 wv[4];
        decode64(j->fmt, b, &v, wv);
        for (int q = 0; q < 4; q++)
            for (int n = 0; n < nb; n++)
                acc[n] = _mm512_fmadd_ps(wv[q], _mm512_loadu_ps(x + n * j->Kp + 64 * w + 16 * q), acc[n]);
    }
    for (int n = 0; n < nb; n++) sp_store(j, n0 + n, r, _mm512_reduce_add_ps(acc[n]));
}

T512 void sp_spmm_small_avx512(const sp_job *j, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t n0 = 0; n0 < j->N; n0 += SMALL_TILE) {
            switch (j->N - n0 < SMALL_TILE ? j->N - n0 : SMALL_TILE) {
            case 1: small_row(j, r, n0, 1); break;
            case 2: small_row(j, r, n0, 2); break;
            case 3: small_row(j, r, n0, 3); break;
            case 4: small_row(j, r, n0, 4); break;
            case 5: small_row(j, r, n0, 5); break;
            case 6: small_row(j, r, n0, 6); break;
            case 7: small_row(j, r, n0, 7); break;
            case 8: small_row(j, r, n0, 8); break;
            case 9: small_row(j, r, n0, 9); break;
            case 10: small_row(j, r, n0, 10); break;
            case 11: small_row(j, r, n0, 11); break;
            case 12: small_row(j, r, n0, 12); break;
            case 13: small_row(j, r, n0, 13); break;
            case 14: small_row(j, r, n0, 14); break;
            case 15: small_row(j, r, n0, 15); break;
            default: small_row(j, r, n0, 16); break;
            }
        }
    }
}

/* Columns per K-block of the broadcast kernel: a block of x tile (KBLK * BTILE fp32 = 16 KB) stays in L1
 * while every row of a row block runs over its nonzeros in that column range. */
#define KBLK 128
#define RBLK 32

/* Append row r's (column, fp32 value) list at idx/val; seg[b] = list offset where K-block b starts.
 * Returns the number of nonzeros. */
static T512 int64_t row_list(const sp_job *j, int64_t r, int32_t *idx, float *val, int64_t *seg) {
    const uint64_t *m = j->mask + r * j->KW;
    int64_t n = 0;
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t w = 0; w < j->KW; w++) {
        if (w % (KBLK / 64) == 0) seg[w / (KBLK / 64)] = n;
        uint64_t b = m[w];
        for (int q = 0; q < 4 && b; q++) {
            __mmask16 k = (__mmask16)(b >> (16 * q));
            __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32((int)(64 * w + 16 * q)));
            _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(k, col));
            n += __builtin_popcount(k);
        }
    }
    seg[(j->KW + KBLK / 64 - 1) / (KBLK / 64)] = n;
    int64_t base = j->rowptr[r], i = 0;
    if (j->fmt == FMT_F32) {
        const float *p = (const float *)j->vals + base;
        for (; i < n; i++) val[i] = p[i];
    } else if (j->fmt == FMT_BF16) {
        const uint16_t *p = (const uint16_t *)j->vals + base;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(val + i, _mm512_castsi512_ps(_mm512_slli_epi32(
                                          _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + i))), 16)));
        for (; i < n; i++) {
            uint32_t bits = (uint32_t)p[i] << 16;
            memcpy(&val[i], &bits, 4);
        }
    } else if (j->fmt == FMT_F16) {
        const uint16_t *p = (const uint16_t *)j->vals + base;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(val + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + i))));
        for (; i < n; i++) val[i] = sp_f16_to_f32(p[i]);
    } else {
        const int8_t *p = (const int8_t *)j->vals + base;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(val + i, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + i)))));
        for (; i < n; i++) val[i] = (float)p[i];
    }
    return n;
}

/* acc[0..1] += sum over list entries [i0, i1) of val * (32-lane x-tile column): one broadcast value
 * feeds two FMAs, so the list is read once per 32 batch rows. */
static inline T512 void run_list(__m512 *acc, const int32_t *idx, const float *val, int64_t i0, int64_t i1,
                                 const float *xt) {
    /* 8 independent accumulator chains: FMA latency (4 cycles) x 2 ports needs at least 8 in flight. */
    __m512 a0 = acc[0], b0 = acc[1], a1 = _mm512_setzero_ps(), b1 = a1, a2 = a1, b2 = a1, a3 = a1, b3 = a1;
    int64_t i = i0;
#define NZ(u, A, B)                                                      \
    do {                                                                 \
        const float *p = xt + (int64_t)idx[i + (u)] * BTILE;             \
        __m512 v = _mm512_set1_ps(val[i + (u)]);                         \
        A = _mm512_fmadd_ps(v, _mm512_load_ps(p), A);                    \
        B = _mm512_fmadd_ps(v, _mm512_load_ps(p + 16), B);               \
    } while (0)
    for (; i + 4 <= i1; i += 4) {
        NZ(0, a0, b0); NZ(1, a1, b1); NZ(2, a2, b2); NZ(3, a3, b3);
    }
    for (; i < i1; i++) NZ(0, a0, b0);
#undef NZ
    acc[0] = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    acc[1] = _mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3));
}

T512 void sp_spmm_bcast_avx512(const sp_job *j, int64_t r0, int64_t r1) {
    const int64_t nkb = (j->Kp + KBLK - 1) / KBLK;
    int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * (size_t)(RBLK * j->Kp + 16));
    float *val = (float *)malloc(sizeof(float) * (size_t)(RBLK * j->Kp + 16));
    int64_t *seg = (int64_t *)malloc(sizeof(int64_t) * (size_t)(RBLK * (nkb + 1)));
    float *acc = (float *)aligned_alloc(64, sizeof(float) * RBLK * BTILE);
    if (!idx || !val || !seg || !acc) goto done;
    const int64_t tiles = (j->N + BTILE - 1) / BTILE;
    for (int64_t rb = r0; rb < r1; rb += RBLK) {
        int64_t nr = r1 - rb < RBLK ? r1 - rb : RBLK, off = 0;
        for (int64_t i = 0; i < nr; i++) {
            int64_t *s = seg + i * (nkb + 1);
            int64_t n = row_list(j, rb + i, idx + off, val + off, s);
            for (int64_t b = 0; b <= nkb; b++) s[b] += off;
            off += n;
        }
        for (int64_t t = 0; t < tiles; t++) {
            const float *xt = j->x32 + t * j->Kp * BTILE;
            memset(acc, 0, sizeof(float) * (size_t)(nr * BTILE));
            for (int64_t b = 0; b < nkb; b++)
                for (int64_t i = 0; i < nr; i++) {
                    const int64_t *s = seg + i * (nkb + 1);
                    if (s[b + 1] > s[b]) {
                        __m512 a[2] = {_mm512_load_ps(acc + i * BTILE), _mm512_load_ps(acc + i * BTILE + 16)};
                        run_list(a, idx, val, s[b], s[b + 1], xt);
                        _mm512_store_ps(acc + i * BTILE, a[0]);
                        _mm512_store_ps(acc + i * BTILE + 16, a[1]);
                    }
                }
            int64_t nl = j->N - t * BTILE < BTILE ? j->N - t * BTILE : BTILE;
            for (int64_t i = 0; i < nr; i++)
                for (int64_t l = 0; l < nl; l++) sp_store(j, t * BTILE + l, rb + i, acc[i * BTILE + l]);
        }
    }
done:
    free(idx);
    free(val);
    free(seg);
    free(acc);
}
#else
void sp_spmm_small_avx512(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
void sp_spmm_bcast_avx512(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
#endif
