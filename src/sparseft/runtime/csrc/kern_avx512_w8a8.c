/* AVX-512 VNNI W8A8 kernel: sparse bitmask int8 weights x per-token int8 activations (see w8a8_common.h).
 *
 * Each 64-bit mask word of a row drives one vpexpandb that puts the row's next popcount(word) int8
 * values into their 64 columns (zeros elsewhere); one vpdpbusd per token then multiplies them with 64
 * shifted activations (u8) and adds groups of 4 products into 16 int32 lanes.
 *   batch 1 (decode): tiles of 4 rows, 4 independent dot products in flight, memory / expand bound;
 *   batch > 1: tiles of 2 rows x up to 12 tokens (24 accumulators + 2 weights + 1 activation of the 32
 *   zmm registers): each expanded weight vector (one vpexpandb, ~3 cycles) serves every token of the
 *   tile and each activation vector both rows; rows go in blocks of 64 so that a block's weights stay
 *   in L2 while each token tile passes over them. Past batch 1 the vpdpbusd count (one per 64 columns
 *   per token, zeros included) bounds the speed.
 * Requires AVX512F/BW/VBMI2/VNNI (checked at run time). */
#include <immintrin.h>
#include "w8a8_common.h"
#include "sparse_common.h"

#if defined(__x86_64__)
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx512vnni,popcnt")))
#define INLINE static inline __attribute__((always_inline))
#include "avx512_reduce.h"
#define W8_RB 4     /* most rows per tile (batch 1) */
#define W8_RB_N 2   /* rows per tile for batch > 1 */
#define W8_NBMAX 12 /* most tokens per tile (W8_RB_N * W8_NBMAX = 24 accumulators) */
#define W8_RBLK 64  /* rows per block for batch > 1 */
/* Software prefetch of the 4 value streams (with 8 interleaved streams, values + masks, the hardware
 * prefetchers alone leave bandwidth unused; same finding as the fp32/int8 SpMV kernels). */
#ifndef W8_PF_DIST
#define W8_PF_DIST 1024
#endif
#define PF(p) _mm_prefetch((const char *)(p) + W8_PF_DIST, SP_PF_HINT)


/* Expand a word's values. The register form (64-byte load, then vpexpandb) measured faster than the
 * memory form (vpexpandb zmm{k}, m512) on Sapphire Rapids; both read at most 64 bytes, which the
 * values' padding covers. -DW8_EXPANDLOAD selects the memory form. */
#ifdef W8_EXPANDLOAD
#define EXPAND(b, p) _mm512_maskz_expandloadu_epi8((b), (p))
#else
#define EXPAND(b, p) _mm512_maskz_expand_epi8((b), _mm512_loadu_si512((const void *)(p)))
#endif

/* Rows r .. r+nr-1 (nr <= rb) against tokens n0 .. n0+nb-1; rows past nr repeat row r (result dropped).
 * rb and nb are compile-time constants at every call, so the accumulators live in registers. */
INLINE T512 void tile(const w8_job *j, int64_t r, int nr, int64_t n0, const int rb, const int nb) {
    const int64_t KW = j->KW, Kp = j->Kp;
    const int8_t *v[W8_RB];
    const uint64_t *m[W8_RB];
    for (int i = 0; i < rb; i++) {
        int64_t ri = i < nr ? r + i : r;
        v[i] = j->vals + j->rowptr[ri];
        m[i] = j->mask + ri * KW;
    }
    const uint8_t *x = j->xu + n0 * Kp;
    __m512i acc[W8_RB][W8_NBMAX];
    for (int i = 0; i < rb; i++)
        for (int n = 0; n < nb; n++) acc[i][n] = _mm512_setzero_si512();
    for (int64_t w = 0; w < KW; w++) {
        uint64_t b[W8_RB], any = 0;
        for (int i = 0; i < rb; i++) {
            b[i] = m[i][w];
            any |= b[i];
            PF(v[i]);
        }
        if (!any) continue;
        __m512i e[W8_RB];
        for (int i = 0; i < rb; i++) {
            e[i] = EXPAND(b[i], v[i]);
            v[i] += __builtin_popcountll(b[i]);
        }
        for (int n = 0; n < nb; n++) {
            __m512i xv = _mm512_loadu_si512((const void *)(x + n * Kp + 64 * w));
            for (int i = 0; i < rb; i++) acc[i][n] = _mm512_dpbusd_epi32(acc[i][n], xv, e[i]);
        }
    }
    for (int n = 0; n < nb; n++) {
        int32_t s[4];
        for (int i0 = 0; i0 < rb; i0 += 4) {
            __m512i z = _mm512_setzero_si512();
            _mm_storeu_si128((__m128i *)s, reduce4_epi32(acc[i0][n], i0 + 1 < rb ? acc[i0 + 1][n] : z,
                                                   i0 + 2 < rb ? acc[i0 + 2][n] : z, i0 + 3 < rb ? acc[i0 + 3][n] : z));
            for (int i = i0; i < nr && i < i0 + 4; i++) w8_store(j, n0 + n, r + i, s[i - i0]);
        }
    }
}

/* Batch 1, rows one after another (sp_spmv_sequential, see sparse_common.h): one sequential stream of
 * values and of mask words; two words per step into separate sums so the vpdpbusd chains overlap. */
INLINE T512 __m512i row_dot_seq(const w8_job *j, int64_t r) {
    const int8_t *v = j->vals + j->rowptr[r];
    const uint64_t *m = j->mask + r * j->KW;
    __m512i a = _mm512_setzero_si512(), b = a;
    int64_t w = 0;
    for (; w + 2 <= j->KW; w += 2) {
        const uint64_t b0 = m[w], b1 = m[w + 1];
        SP_SEQ_PF(v);
        __m512i e0 = SP_LOAD_OR_EXPAND_EPI8(b0, v);
        v += __builtin_popcountll(b0);
        __m512i e1 = SP_LOAD_OR_EXPAND_EPI8(b1, v);
        v += __builtin_popcountll(b1);
        a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(j->xu + 64 * w)), e0);
        b = _mm512_dpbusd_epi32(b, _mm512_loadu_si512((const void *)(j->xu + 64 * w + 64)), e1);
    }
    if (w < j->KW) a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(j->xu + 64 * w)), SP_LOAD_OR_EXPAND_EPI8(m[w], v));
    return _mm512_add_epi32(a, b);
}

static T512 void seq_rows(const w8_job *j, int64_t r0, int64_t r1) {
    const __m512i z = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        __m512i acc[4] = {z, z, z, z};
        for (int i = 0; i < nr; i++) acc[i] = row_dot_seq(j, r + i);
        int32_t s[4];
        _mm_storeu_si128((__m128i *)s, reduce4_epi32(acc[0], acc[1], acc[2], acc[3]));
        for (int i = 0; i < nr; i++) w8_store(j, 0, r + i, s[i]);
    }
}

/* Batch 1, every column stored (j->full, e.g. an int8 lm_head): 4 rows side by side read with plain
 * loads, no mask words (SP_FULL_WORD_EPI8: only a partial last word is a masked load). Four plain streams
 * measured 1.5x one row after another on Zen 5. */
static T512 void full_rows(const w8_job *j, int64_t r0, int64_t r1) {
    const int64_t K = j->K, KW = j->KW;
    const __mmask64 tail = SP_TAIL_MASK(K);
    const __m512i z = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const int8_t *v[4];
        for (int i = 0; i < 4; i++) v[i] = j->vals + (r + (i < nr ? i : 0)) * K;
        __m512i acc[4] = {z, z, z, z};
        for (int64_t w = 0; w < KW; w++) {
            const __m512i xv = _mm512_loadu_si512((const void *)(j->xu + 64 * w));
            for (int i = 0; i < 4; i++) {
                SP_FULL_PF(v[i] + 64 * w);
                acc[i] = _mm512_dpbusd_epi32(acc[i], xv, SP_FULL_WORD_EPI8(v[i], w, KW, tail));
            }
        }
        int32_t s[4];
        _mm_storeu_si128((__m128i *)s, reduce4_epi32(acc[0], acc[1], acc[2], acc[3]));
        for (int i = 0; i < nr; i++) w8_store(j, 0, r + i, s[i]);
    }
}

T512 void w8a8_avx512(const w8_job *j, int64_t r0, int64_t r1) {
    if (j->N == 1 && j->full) {
        full_rows(j, r0, r1);
        return;
    }
    if (j->N == 1 && sp_spmv_sequential) {
        seq_rows(j, r0, r1);
        return;
    }
    if (j->N == 1) {
        for (int64_t r = r0; r < r1; r += W8_RB) tile(j, r, r1 - r < W8_RB ? (int)(r1 - r) : W8_RB, 0, W8_RB, 1);
        return;
    }
    const int64_t ntiles = (j->N + W8_NBMAX - 1) / W8_NBMAX;
    for (int64_t b0 = r0; b0 < r1; b0 += W8_RBLK) {
        int64_t b1 = b0 + W8_RBLK < r1 ? b0 + W8_RBLK : r1;
        for (int64_t t = 0, n0 = 0; t < ntiles; t++) {
            /* token tiles as even as possible (16 tokens: 8 + 8, not 12 + 4) */
            int64_t nb = (j->N - n0) / (ntiles - t) + ((j->N - n0) % (ntiles - t) != 0);
            for (int64_t r = b0; r < b1; r += W8_RB_N) {
                int nr = b1 - r < W8_RB_N ? (int)(b1 - r) : W8_RB_N;
                switch (nb) {
                case 1: tile(j, r, nr, n0, W8_RB_N, 1); break;
                case 2: tile(j, r, nr, n0, W8_RB_N, 2); break;
                case 3: tile(j, r, nr, n0, W8_RB_N, 3); break;
                case 4: tile(j, r, nr, n0, W8_RB_N, 4); break;
                case 5: tile(j, r, nr, n0, W8_RB_N, 5); break;
                case 6: tile(j, r, nr, n0, W8_RB_N, 6); break;
                case 7: tile(j, r, nr, n0, W8_RB_N, 7); break;
                case 8: tile(j, r, nr, n0, W8_RB_N, 8); break;
                case 9: tile(j, r, nr, n0, W8_RB_N, 9); break;
                case 10: tile(j, r, nr, n0, W8_RB_N, 10); break;
                case 11: tile(j, r, nr, n0, W8_RB_N, 11); break;
                default: tile(j, r, nr, n0, W8_RB_N, 12); break;
                }
            }
            n0 += nb;
        }
    }
}

/* Per-token quantization of one contiguous row (see w8a8_module.c for the rounding it must match):
 * u8 q + 128 for columns [0, K); returns the scale (max|x| / 127, 1 for an all-zero row, or `scale`
 * when that is > 0). vrndscaleps rounds ties to even, like torch.round. */
T512 float w8a8_quantize_row_avx512(const float *x, int64_t K, float scale, uint8_t *out) {
    float s = scale;
    if (!(s > 0.f)) {
        __m512 m = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 t = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(t, x + k)));
        }
        float amax = _mm512_reduce_max_ps(m);
        s = amax > 0.f ? amax / 127.f : 1.f;
    }
    const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
    const __m512i off = _mm512_set1_epi32(128);
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 t = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(t, x + k), vs);
        v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(out + k, t, _mm512_add_epi32(_mm512_cvtps_epi32(v), off));
    }
    return s;
}
#else
void w8a8_avx512(const w8_job *j, int64_t r0, int64_t r1) { w8a8_portable(j, r0, r1); }
float w8a8_quantize_row_avx512(const float *x, int64_t K, float scale, uint8_t *out) {
    (void)x; (void)K; (void)out;
    return scale; /* never called: the AVX-512 path is not chosen off x86-64 */
}
#endif
