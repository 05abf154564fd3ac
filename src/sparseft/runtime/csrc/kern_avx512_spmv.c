/* AVX-512 batch-1 kernels (decode): 4 rows at a time, each 64-bit mask word drives expand-loads of
 * the packed values straight into their columns.
 *   fp32: vexpandps + FMA against fp32 x.
 *   bf16: vpexpandw of 32 bf16, widened in place by shift / mask against de-interleaved fp32 x.
 *   fp16: vpexpandw of 32 fp16, widened by vcvtph2ps (two halves of 16) against fp32 x.
 *   int8: vpexpandb of 64 int8, then vpdpbusd against x quantized per call to 16 bits as two u8
 *         digits (lo, hi+128); the +128 offset is removed with the row's sum of int8 values.
 * Expand instructions cost ~3 cycles each on the machine measured, whatever their width,
 * so the kernels use as few as possible per weight (vpexpandb: 64 int8 at once).
 * Requires AVX512F/BW/VL/DQ/VBMI2/VNNI (checked at run time by cpu.c). */
#include <immintrin.h>
#include "sparse_common.h"

#if defined(__x86_64__)
/* Software prefetch PF_DIST bytes ahead on each of the 4 value streams: with 8 interleaved streams
 * (4 rows of values + masks) the hardware prefetchers alone leave bandwidth unused. */
#ifndef PF_DIST
#define PF_DIST 16384
#endif
#define PF(p) _mm_prefetch((const char *)(p) + PF_DIST, SP_PF_HINT)
/* The float-valued kernels (fp32 / bf16 / fp16) prefetch into L2 (-DSPMV_FLOAT_PF_HINT=... to try): GPT-2's
 * one-token fp32 forward (Zen 5, 1 thread, 2 A/B builds) at 50% 23.7-24.2 -> 21.3-21.4 ms, at 70% 18.9-19.9
 * -> 18.1-18.3 ms. The int8 tiles keep SP_PF_HINT (see sparse_common.h). */
#ifndef SPMV_FLOAT_PF_HINT
#define SPMV_FLOAT_PF_HINT _MM_HINT_T1
#endif
#define PF_FLOAT(p) _mm_prefetch((const char *)(p) + PF_DIST, SPMV_FLOAT_PF_HINT)
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx512vnni,popcnt,bmi,bmi2,fma")))
#include "avx512_reduce.h"

static inline T512 void spmv_f32_row1(const sp_job *j, int64_t r) {
    const float *v = (const float *)j->vals + j->rowptr[r];
    const uint64_t *m = j->mask + r * j->KW;
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    for (int64_t w = 0; w < j->KW; w++) {
        uint64_t bits = m[w];
        const float *x = j->x32 + 64 * w;
        for (int q = 0; q < 4; q += 2) {
            __mmask16 k0 = (__mmask16)(bits >> (16 * q)), k1 = (__mmask16)(bits >> (16 * q + 16));
            a = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k0, _mm512_loadu_ps(v)), _mm512_loadu_ps(x + 16 * q), a);
            v += __builtin_popcount(k0);
            b = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k1, _mm512_loadu_ps(v)), _mm512_loadu_ps(x + 16 * q + 16), b);
            v += __builtin_popcount(k1);
        }
    }
    sp_store(j, 0, r, _mm512_reduce_add_ps(_mm512_add_ps(a, b)));
}

static T512 void spmv_f32(const sp_job *j, int64_t r0, int64_t r1) {
    const float *V = (const float *)j->vals;
    const int64_t KW = j->KW;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *v0 = V + j->rowptr[r], *v1 = V + j->rowptr[r + 1];
        const float *v2 = V + j->rowptr[r + 2], *v3 = V + j->rowptr[r + 3];
        const uint64_t *m0 = j->mask + r * KW, *m1 = m0 + KW, *m2 = m1 + KW, *m3 = m2 + KW;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t w = 0; w < KW; w++) {
            uint64_t b0 = m0[w], b1 = m1[w], b2 = m2[w], b3 = m3[w];
            PF_FLOAT(v0); PF_FLOAT(v1); PF_FLOAT(v2); PF_FLOAT(v3);
            if (!(b0 | b1 | b2 | b3)) continue; /* pays off only at very high sparsity */
            const float *x = j->x32 + 64 * w;
#define STEP(q)                                                                              \
    do {                                                                                     \
        __m512 xv = _mm512_loadu_ps(x + 16 * (q));                                           \
        __mmask16 k0 = (__mmask16)(b0 >> (16 * (q))), k1 = (__mmask16)(b1 >> (16 * (q)));    \
        __mmask16 k2 = (__mmask16)(b2 >> (16 * (q))), k3 = (__mmask16)(b3 >> (16 * (q)));    \
        a0 = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k0, _mm512_loadu_ps(v0)), xv, a0);                   \
        a1 = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k1, _mm512_loadu_ps(v1)), xv, a1);                   \
        a2 = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k2, _mm512_loadu_ps(v2)), xv, a2);                   \
        a3 = _mm512_fmadd_ps(_mm512_maskz_expand_ps(k3, _mm512_loadu_ps(v3)), xv, a3);                   \
        v0 += __builtin_popcount(k0); v1 += __builtin_popcount(k1);                          \
        v2 += __builtin_popcount(k2); v3 += __builtin_popcount(k3);                          \
    } while (0)
            STEP(0); STEP(1); STEP(2); STEP(3);
#undef STEP
        }
        float s[4];
        _mm_storeu_ps(s, reduce4_ps(a0, a1, a2, a3));
        for (int i = 0; i < 4; i++) sp_store(j, 0, r + i, s[i]);
    }
    for (; r < r1; r++) spmv_f32_row1(j, r);
}

/* bf16: a 32-bit lane of 32 expanded bf16 holds an even column (low half) and an odd column (high
 * half); shifting / masking turns each into fp32 in place, so x is prepared de-interleaved per 32
 * columns (16 even, then 16 odd) and no cross-lane shuffle is needed. (vdpbf16ps would do the same
 * with one instruction but costs more than shift + FMA here, and needs x rounded to bf16.) */
static T512 void spmv_bf16(const sp_job *j, int64_t r0, int64_t r1) {
    const uint16_t *V = (const uint16_t *)j->vals;
    const int64_t KW = j->KW;
    const __m512i hi16 = _mm512_set1_epi32((int)0xFFFF0000u);
    int64_t r = r0;
    for (; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const uint16_t *v[4];
        const uint64_t *m[4];
        for (int i = 0; i < 4; i++) {
            int ri = i < nr ? i : 0; /* tail: repeat row 0, result discarded */
            v[i] = V + j->rowptr[r + ri];
            m[i] = j->mask + (r + ri) * KW;
        }
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        for (int64_t w = 0; w < KW; w++) {
            uint64_t b0 = m[0][w], b1 = m[1][w], b2 = m[2][w], b3 = m[3][w];
            PF_FLOAT(v[0]); PF_FLOAT(v[1]); PF_FLOAT(v[2]); PF_FLOAT(v[3]);
            if (!(b0 | b1 | b2 | b3)) continue;
            for (int q = 0; q < 2; q++) {
                __m512 xe = _mm512_loadu_ps(j->x32 + 64 * w + 32 * q);
                __m512 xo = _mm512_loadu_ps(j->x32 + 64 * w + 32 * q + 16);
#define LANE(i, E, O, B)                                                                   \
    do {                                                                                   \
        __mmask32 k = (__mmask32)(B >> (32 * q));                                          \
        __m512i e = _mm512_maskz_expand_epi16(k, _mm512_loadu_si512(v[i]));                \
        v[i] += __builtin_popcount(k);                                                     \
        E = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e, 16)), xe, E);         \
        O = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(e, hi16)), xo, O);        \
    } while (0)
                LANE(0, e0, o0, b0); LANE(1, e1, o1, b1); LANE(2, e2, o2, b2); LANE(3, e3, o3, b3);
#undef LANE
            }
        }
        float s[4];
        _mm_storeu_ps(s, reduce4_ps(_mm512_add_ps(e0, o0), _mm512_add_ps(e1, o1), _mm512_add_ps(e2, o2),
                                    _mm512_add_ps(e3, o3)));
        for (int i = 0; i < nr; i++) sp_store(j, 0, r + i, s[i]);
    }
}

/* fp16: as bf16, but the halves need a real conversion (vcvtph2ps), so x stays in column order. */
static T512 void spmv_f16(const sp_job *j, int64_t r0, int64_t r1) {
    const uint16_t *V = (const uint16_t *)j->vals;
    const int64_t KW = j->KW;
    int64_t r = r0;
    for (; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const uint16_t *v[4];
        const uint64_t *m[4];
        for (int i = 0; i < 4; i++) {
            int ri = i < nr ? i : 0; /* tail: repeat row 0, result discarded */
            v[i] = V + j->rowptr[r + ri];
            m[i] = j->mask + (r + ri) * KW;
        }
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        for (int64_t w = 0; w < KW; w++) {
            uint64_t b0 = m[0][w], b1 = m[1][w], b2 = m[2][w], b3 = m[3][w];
            PF_FLOAT(v[0]); PF_FLOAT(v[1]); PF_FLOAT(v[2]); PF_FLOAT(v[3]);
            if (!(b0 | b1 | b2 | b3)) continue;
            for (int q = 0; q < 2; q++) {
                __m512 xl = _mm512_loadu_ps(j->x32 + 64 * w + 32 * q);
                __m512 xh = _mm512_loadu_ps(j->x32 + 64 * w + 32 * q + 16);
#define LANE(i, E, O, B)                                                                   \
    do {                                                                                   \
        __mmask32 k = (__mmask32)(B >> (32 * q));                                          \
        __m512i e = _mm512_maskz_expand_epi16(k, _mm512_loadu_si512(v[i]));                \
        v[i] += __builtin_popcount(k);                                                     \
        E = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(e)), xl, E);            \
        O = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(e, 1)), xh, O);      \
    } while (0)
                LANE(0, e0, o0, b0); LANE(1, e1, o1, b1); LANE(2, e2, o2, b2); LANE(3, e3, o3, b3);
#undef LANE
            }
        }
        float s[4];
        _mm_storeu_ps(s, reduce4_ps(_mm512_add_ps(e0, o0), _mm512_add_ps(e1, o1), _mm512_add_ps(e2, o2),
                                    _mm512_add_ps(e3, o3)));
        for (int i = 0; i < nr; i++) sp_store(j, 0, r + i, s[i]);
    }
}

/* int8: y = scale_r * sx * (256 * (sum(q * hi) - 128 * rowsum) + sum(q * lo)), for rows r .. r+nr-1 from
 * their hi / lo digit sums. Lane sums fit int32: each row's sums do (K <= 65536, checked by module.c). */
static inline __attribute__((always_inline)) T512 void i8_store4(const sp_job *j, int64_t r, int nr, const __m512i h[4],
                                                                 const __m512i l[4]) {
    int32_t hs[4], ls[4];
    _mm_storeu_si128((__m128i *)hs, reduce4_epi32(h[0], h[1], h[2], h[3]));
    _mm_storeu_si128((__m128i *)ls, reduce4_epi32(l[0], l[1], l[2], l[3]));
    for (int i = 0; i < nr; i++) {
        int64_t dot = 256 * (hs[i] - 128 * (int64_t)j->rowsum[r + i]) + ls[i];
        sp_store(j, 0, r + i, (float)((double)dot * j->xscale[0]));
    }
}

static T512 void spmv_i8(const sp_job *j, int64_t r0, int64_t r1) {
    const int8_t *V = (const int8_t *)j->vals;
    const int64_t KW = j->KW;
    int64_t r = r0;
    for (; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const int8_t *v[4];
        const uint64_t *m[4];
        for (int i = 0; i < 4; i++) {
            int ri = i < nr ? i : 0;
            v[i] = V + j->rowptr[r + ri];
            m[i] = j->mask + (r + ri) * KW;
        }
        __m512i h0 = _mm512_setzero_si512(), h1 = h0, h2 = h0, h3 = h0, l0 = h0, l1 = h0, l2 = h0, l3 = h0;
        for (int64_t w = 0; w < KW; w++) {
            uint64_t b0 = m[0][w], b1 = m[1][w], b2 = m[2][w], b3 = m[3][w];
            PF(v[0]); PF(v[1]); PF(v[2]); PF(v[3]);
            if (!(b0 | b1 | b2 | b3)) continue;
            __m512i xlo = _mm512_loadu_si512(j->xq_lo + 64 * w);
            __m512i xhi = _mm512_loadu_si512(j->xq_hi + 64 * w);
#define LANE(i, H, L, B)                                               \
    do {                                                               \
        __m512i e = _mm512_maskz_expand_epi8(B, _mm512_loadu_si512(v[i]));            \
        v[i] += __builtin_popcountll(B);                               \
        H = _mm512_dpbusd_epi32(H, xhi, e);                            \
        L = _mm512_dpbusd_epi32(L, xlo, e);                            \
    } while (0)
            LANE(0, h0, l0, b0); LANE(1, h1, l1, b1); LANE(2, h2, l2, b2); LANE(3, h3, l3, b3);
#undef LANE
        }
        const __m512i h[4] = {h0, h1, h2, h3}, l[4] = {l0, l1, l2, l3};
        i8_store4(j, r, nr, h, l);
    }
}

/* int8, rows one after another: each row's values and mask are read as one sequential stream (the 4-row
 * tiles above read 8 interleaved ones), 4 rows' sums reduced together. */
static T512 void spmv_i8_seq(const sp_job *j, int64_t r0, int64_t r1) {
    const int8_t *V = (const int8_t *)j->vals;
    const int64_t KW = j->KW;
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        __m512i h[4], l[4];
        for (int i = 0; i < 4; i++) {
            h[i] = l[i] = _mm512_setzero_si512();
            if (i >= nr) continue;
            const int8_t *v = V + j->rowptr[r + i];
            const uint64_t *m = j->mask + (r + i) * KW;
            /* two words per step into separate sums: the vpdpbusd latency chains overlap */
            __m512i h2 = _mm512_setzero_si512(), l2 = h2;
            int64_t w = 0;
            for (; w + 2 <= KW; w += 2) {
                const uint64_t b0 = m[w], b1 = m[w + 1];
                __m512i e0 = SP_LOAD_OR_EXPAND_EPI8(b0, v);
                v += __builtin_popcountll(b0);
                __m512i e1 = SP_LOAD_OR_EXPAND_EPI8(b1, v);
                v += __builtin_popcountll(b1);
                h[i] = _mm512_dpbusd_epi32(h[i], _mm512_loadu_si512(j->xq_hi + 64 * w), e0);
                l[i] = _mm512_dpbusd_epi32(l[i], _mm512_loadu_si512(j->xq_lo + 64 * w), e0);
                h2 = _mm512_dpbusd_epi32(h2, _mm512_loadu_si512(j->xq_hi + 64 * w + 64), e1);
                l2 = _mm512_dpbusd_epi32(l2, _mm512_loadu_si512(j->xq_lo + 64 * w + 64), e1);
            }
            if (w < KW) {
                __m512i e = SP_LOAD_OR_EXPAND_EPI8(m[w], v);
                h[i] = _mm512_dpbusd_epi32(h[i], _mm512_loadu_si512(j->xq_hi + 64 * w), e);
                l[i] = _mm512_dpbusd_epi32(l[i], _mm512_loadu_si512(j->xq_lo + 64 * w), e);
            }
            h[i] = _mm512_add_epi32(h[i], h2);
            l[i] = _mm512_add_epi32(l[i], l2);
        }
        i8_store4(j, r, nr, h, l);
    }
}

/* int8 with every column stored (j->full, e.g. an int8 lm_head): 4 rows side by side, plain loads, no
 * mask words (see full_rows of kern_avx512_w8a8.c). */
static T512 void spmv_i8_full(const sp_job *j, int64_t r0, int64_t r1) {
    const int64_t K = j->K, KW = j->KW;
    const __mmask64 tail = SP_TAIL_MASK(K);
    const __m512i z = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const int8_t *v[4];
        for (int i = 0; i < 4; i++) v[i] = (const int8_t *)j->vals + (r + (i < nr ? i : 0)) * K;
        __m512i h[4] = {z, z, z, z}, l[4] = {z, z, z, z};
        for (int64_t w = 0; w < KW; w++) {
            const __m512i xhi = _mm512_loadu_si512(j->xq_hi + 64 * w), xlo = _mm512_loadu_si512(j->xq_lo + 64 * w);
            for (int i = 0; i < 4; i++) {
                SP_FULL_PF(v[i] + 64 * w);
                const __m512i e = SP_FULL_WORD_EPI8(v[i], w, KW, tail);
                h[i] = _mm512_dpbusd_epi32(h[i], xhi, e);
                l[i] = _mm512_dpbusd_epi32(l[i], xlo, e);
            }
        }
        i8_store4(j, r, nr, h, l);
    }
}

T512 void sp_spmv_avx512(const sp_job *j, int64_t r0, int64_t r1) {
    if (j->fmt == FMT_F32) spmv_f32(j, r0, r1);
    else if (j->fmt == FMT_BF16) spmv_bf16(j, r0, r1);
    else if (j->fmt == FMT_F16) spmv_f16(j, r0, r1);
    else if (j->full) spmv_i8_full(j, r0, r1);
    else if (sp_spmv_sequential) spmv_i8_seq(j, r0, r1);
    else spmv_i8(j, r0, r1);
}
#else
void sp_spmv_avx512(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
#endif
