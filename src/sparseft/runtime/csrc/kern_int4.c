/* int4 kernels: bitmask-indexed 4-bit codes u (weight = (u - 8) * s[row][group of 128 columns]).
 *
 * Batch 1 on AVX-512 (sp_spmv_i4_avx512), rows one after another. x is quantized per call to 16 bits,
 * q in [-32512, 32512] (so that both digits fit int8), split as q = 256 hi + lo with signed digits; the
 * weights are the unsigned operand of vpdpbusd. Per mask word: 64 bytes from the row's nibble position,
 * vpermb + vpmultishiftqb + and turn the next 64 codes into bytes (either nibble parity), a merging
 * vpexpandb puts them in their columns with 8 (= a zero weight) everywhere else, and two vpdpbusd add
 * u * hi and u * lo. Every column so counts u = q_w + 8, and the 8 * sum(x) over each group that this
 * adds is taken off once per row from the group sums of x:
 *     y = sx * (sum_g s_g (256 H_g + L_g) - 8 sum_g s_g X_g),   H_g, L_g, X_g exact int32.
 * Other ISAs: the portable kernel (kern_portable.c, group scales included); run_fp.c runs the AVX-512
 * one token by token for batches above 1. */
#include <math.h>
#include <string.h>
#include "sparse_common.h"

/* 16-bit quantization bound: hi = (q - lo) / 256 stays within int8 for |q| <= 32512. */
#define I4_QMAX 32512

size_t sp_i4_xbytes(int64_t Kp) { return (size_t)Kp * 2 + sizeof(int32_t) * (size_t)I4_GROUPS(Kp / 64) + 64; }

/* The scale of x's 16-bit quantization (max|x| / I4_QMAX, 1 for an all-zero x). */
static float i4_xscale(const float *x, int64_t sc, int64_t K) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[k * sc]));
    return amax > 0.f ? amax / (float)I4_QMAX : 1.f;
}

/* x[k] / sx rounded into [-I4_QMAX, I4_QMAX], split as q = 256 hi + lo with lo in [-128, 127]. */
static inline int32_t i4_digits(float v, float inv, int8_t *lo, int8_t *hi) {
    int32_t q = (int32_t)lrintf(v * inv);
    q = q > I4_QMAX ? I4_QMAX : (q < -I4_QMAX ? -I4_QMAX : q);
    const int32_t l = ((q + 128) & 255) - 128;
    *lo = (int8_t)l;
    *hi = (int8_t)((q - l) / 256);
    return q;
}

/* Fills j->xs_lo, xs_hi ([Kp] signed digits, zero padded), xgsum (per group) and xscale from x (column
 * stride sc); buf holds sp_i4_xbytes(Kp). */
void sp_i4_prep_x(sp_job *j, const float *x, int64_t sc, void *buf) {
    const int64_t K = j->K, Kp = j->Kp, G = I4_GROUPS(j->KW);
    int8_t *lo = (int8_t *)buf, *hi = lo + Kp;
    int32_t *gsum = (int32_t *)(hi + Kp);
    float *scale = (float *)(gsum + G);
    const float sx = i4_xscale(x, sc, K), inv = 1.f / sx;
    memset(lo, 0, (size_t)Kp * 2);
    memset(gsum, 0, sizeof(int32_t) * (size_t)G);
    for (int64_t k = 0; k < K; k++) gsum[k / I4_GROUP] += i4_digits(x[k * sc], inv, lo + k, hi + k);
    *scale = sx;
    j->xs_lo = lo;
    j->xs_hi = hi;
    j->xgsum = gsum;
    j->xscale = scale;
}

size_t sp_i4_full_xbytes(int64_t KW) {
    const int64_t G = I4_GROUPS(KW);
    return (size_t)(4 * 64 * G) + sizeof(int32_t) * (size_t)G + sizeof(float) + 64;
}

/* The same quantization for the dense-row kernel: per group of 128 columns 4 x 64 digits, hi of the even
 * columns, hi of the odd, lo of the even, lo of the odd (a row's byte b holds columns 2b and 2b + 1), so
 * that one 64-byte load of codes meets 4 plain loads of x. buf holds sp_i4_full_xbytes(KW). */
void sp_i4_prep_x_full(sp_job *j, const float *x, int64_t sc, void *buf) {
    const int64_t K = j->K, G = I4_GROUPS(j->KW);
    int8_t *xg = (int8_t *)buf;
    int32_t *gsum = (int32_t *)(xg + 4 * 64 * G);
    float *scale = (float *)(gsum + G);
    const float sx = i4_xscale(x, sc, K), inv = 1.f / sx;
    memset(xg, 0, (size_t)(4 * 64 * G));
    memset(gsum, 0, sizeof(int32_t) * (size_t)G);
    for (int64_t k = 0; k < K; k++) {
        int8_t *at = xg + 256 * (k / I4_GROUP) + 64 * (k & 1) + (k % I4_GROUP) / 2;
        gsum[k / I4_GROUP] += i4_digits(x[k * sc], inv, at + 128, at);
    }
    *scale = sx;
    j->xs_groups = xg;
    j->xgsum = gsum;
    j->xscale = scale;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vbmi2,avx512vnni,popcnt")))
#define INLINE static inline __attribute__((always_inline))
#include "avx512_reduce.h"

typedef struct {
    __m512i idx[2], ctrl[2], low4, eight;
} i4_consts;

/* Output byte i takes nibble (i + p) of the 64 loaded bytes: byte (i + p) / 2 moved to position i
 * (vpermb), then shifted right by 4 when (i + p) is odd (vpmultishiftqb picks the 8 bits at that offset
 * of its qword), then masked to 4 bits. */
static T512 void i4_init(i4_consts *c) {
    uint8_t idx[2][64], ctrl[2][64];
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 64; i++) {
            idx[p][i] = (uint8_t)((i + p) >> 1);
            ctrl[p][i] = (uint8_t)(8 * (i & 7) + 4 * ((i + p) & 1));
        }
    for (int p = 0; p < 2; p++) {
        c->idx[p] = _mm512_loadu_si512(idx[p]);
        c->ctrl[p] = _mm512_loadu_si512(ctrl[p]);
    }
    c->low4 = _mm512_set1_epi8(15);
    c->eight = _mm512_set1_epi8(8);
}

/* The codes of the word `b` at nibble position *o, in their columns (8 elsewhere); advances *o. */
INLINE T512 __m512i i4_word(const i4_consts *c, const uint8_t *vals, int64_t *o, uint64_t b) {
    const int p = (int)(*o & 1);
    __m512i raw = _mm512_loadu_si512((const void *)(vals + (*o >> 1)));
    __m512i u = _mm512_and_si512(_mm512_multishift_epi64_epi8(c->ctrl[p], _mm512_permutexvar_epi8(c->idx[p], raw)),
                                 c->low4);
    *o += __builtin_popcountll(b);
    return _mm512_mask_expand_epi8(c->eight, b, u);
}

INLINE T512 float i4_row(const sp_job *j, const i4_consts *c, int64_t r) {
    const int64_t KW = j->KW, G = I4_GROUPS(KW);
    const uint64_t *m = j->mask + r * KW;
    const float *s = j->gscales + r * G;
    const uint8_t *vals = (const uint8_t *)j->vals;
    int64_t o = j->rowptr[r];
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        const int64_t w = 2 * g;
        __m512i u = i4_word(c, vals, &o, m[w]);
        __m512i h = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(j->xs_hi + 64 * w));
        __m512i l = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(j->xs_lo + 64 * w));
        if (w + 1 < KW) {
            u = i4_word(c, vals, &o, m[w + 1]);
            h = _mm512_dpbusd_epi32(h, u, _mm512_loadu_si512(j->xs_hi + 64 * w + 64));
            l = _mm512_dpbusd_epi32(l, u, _mm512_loadu_si512(j->xs_lo + 64 * w + 64));
        }
        __m512 part = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
        acc = _mm512_fmadd_ps(part, _mm512_set1_ps(s[g]), acc);
    }
    float corr = 0.f;
    for (int64_t g = 0; g < G; g++) corr += s[g] * (float)j->xgsum[g];
    return (_mm512_reduce_add_ps(acc) - 8.f * corr) * j->xscale[0];
}

/* Batch 1, every column stored (j->full) and K even, so that every row starts on a byte: byte b of a
 * group's 64 holds columns 2b (low nibble) and 2b + 1 (high nibble). 4 rows side by side, plain loads,
 * no mask and no expand; nibbles split by and / shift, 4 vpdpbusd per row and group against the
 * de-interleaved digits of sp_i4_prep_x_full. A row's last group of K % 128 columns reads on into the
 * next row's codes (or the values' padding): they meet x digits of 0. */
T512 void sp_spmv_i4_full_avx512(const sp_job *j, int64_t r0, int64_t r1) {
    const int64_t K = j->K, G = I4_GROUPS(j->KW);
    const uint8_t *vals = (const uint8_t *)j->vals;
    const __m512i low4 = _mm512_set1_epi8(15), z = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r += 4) {
        const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        const uint8_t *v[4];
        const float *s[4];
        for (int i = 0; i < 4; i++) {
            const int64_t ri = r + (i < nr ? i : 0);
            v[i] = vals + ri * K / 2;
            s[i] = j->gscales + ri * G;
        }
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t g = 0; g < G; g++) {
            const int8_t *xp = j->xs_groups + 256 * g;
            const __m512i he = _mm512_loadu_si512((const void *)xp), ho = _mm512_loadu_si512((const void *)(xp + 64));
            const __m512i le = _mm512_loadu_si512((const void *)(xp + 128)), lo = _mm512_loadu_si512((const void *)(xp + 192));
            for (int i = 0; i < 4; i++) {
                SP_FULL_PF(v[i] + 64 * g);
                const __m512i raw = _mm512_loadu_si512((const void *)(v[i] + 64 * g));
                const __m512i ue = _mm512_and_si512(raw, low4), uo = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
                const __m512i h = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, ue, he), uo, ho);
                const __m512i l = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, ue, le), uo, lo);
                const __m512 part = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
                acc[i] = _mm512_fmadd_ps(part, _mm512_set1_ps(s[i][g]), acc[i]);
            }
        }
        float sums[4];
        _mm_storeu_ps(sums, reduce4_ps(acc[0], acc[1], acc[2], acc[3]));
        for (int i = 0; i < nr; i++) {
            float corr = 0.f;
            for (int64_t g = 0; g < G; g++) corr += s[i][g] * (float)j->xgsum[g];
            sp_store(j, 0, r + i, (sums[i] - 8.f * corr) * j->xscale[0]);
        }
    }
}

T512 void sp_spmv_i4_avx512(const sp_job *j, int64_t r0, int64_t r1) {
    i4_consts c;
    i4_init(&c);
    for (int64_t r = r0; r < r1; r++) sp_store(j, 0, r, i4_row(j, &c, r));
}
#else
void sp_spmv_i4_avx512(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
void sp_spmv_i4_full_avx512(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
#endif
