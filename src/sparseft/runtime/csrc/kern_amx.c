/* AMX batch kernels (Intel Sapphire Rapids and later): bf16 and int8 values, batch > 1.
 *
 * Blocks of 32 weight rows are decoded chunk by chunk (vpexpandw / vpexpandb, zeros filled) into a
 * small dense buffer laid out so each AMX A tile (16 rows x 64 bytes) is 1 KB contiguous, and
 * multiplied against x, prepared once per call in the AMX B-tile ("VNNI") layout:
 *   bf16 values: x is split into two bf16, hi = bf16(x) and lo = bf16(x - hi) (~16 significant bits,
 *     so the result keeps the accuracy of fp32 x times bf16 weights); TDPBF16PS accumulates
 *     W*hi + W*lo in fp32. B tile: [32 columns / 2][16 batch rows][2] bf16.
 *   int8 values: the int8 weights go to the A tiles as they are; x is quantized per batch row to 16
 *     bits (q = round(x / sx), sx = max|x| / 32767, as the batch-1 kernel does) written as two digits
 *     q = 256*hi + lo, hi signed, lo unsigned; TDPBSSD (W*hi) and TDPBSUD (W*lo) accumulate exact int32
 *     sums, combined as (256*Chi + Clo) * sx * scale[row] in the epilogue. B tile: [64 columns / 4][16
 *     batch rows][4].
 * Each output tile C[16 weight rows][16 batch rows] is transposed in registers into y (+ bias).
 * fp32 values never come here: AMX would round the weights to bf16. AMX reads bf16 denormals as zero
 * (|x| or |w| below ~1e-38); an infinite x gives NaN outputs instead of infinite ones.
 *
 * Costs (one core): decoding is ~3 cycles per expand, 2 per 64 bf16 columns and 1 per 64 int8 columns
 * of every row, whatever the batch; a TDP is 16 cycles for 16x16x32 (bf16) or 16x16x64 (int8) and is
 * fed from L1 (A) and L2 (B). Below ~16 batch rows the decoding dominates, so it is interleaved with the
 * tile steps of the previous chunk (vector units and the AMX unit work in parallel).
 *
 * AMX needs the OS to grant the tile state: Linux arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA), asked
 * once by sp_amx_available(); without it the tile instructions fault, so that check gates every use.
 * The tile configuration is per thread and set at the start of every sp_spmm_amx call. */
#define _GNU_SOURCE /* syscall() */
#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TAMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx512bf16,popcnt,amx-tile,amx-bf16,amx-int8")))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tilecfg;

int sp_amx_available(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    unsigned a, b, c, d;
    int ok = sp_best_isa() == ISA_AVX512;
    ok = ok && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1) && (d >> 25 & 1);
    ok = ok && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1); /* AVX512_BF16: x split */
    /* The kernel may refuse (old kernel, or a seccomp filter): then the tiles must not be touched. */
    ok = ok && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    cached = ok;
    return ok;
}

/* Batch tiles of 16 rows of x. */
static inline int64_t nbt(int64_t N) { return (N + 15) / 16; }

size_t sp_amx_xbytes(int fmt, int64_t N, int64_t Kp) {
    /* bf16: hi and lo, 2 bytes each per (batch row, column); int8: two 1-byte digits + a scale per row. */
    return fmt == FMT_BF16 ? (size_t)(nbt(N) * Kp * 64) : (size_t)(nbt(N) * Kp * 32 + nbt(N) * 64);
}

/* Thread-local scratch, grown on demand and kept: pool threads live for the whole process.
 * Slots: 0 chunk buffers + C tiles, 1 rows of a strided x, 2 the kernel context. */
static void *scratch(int which, size_t bytes) {
    static __thread void *buf[3];
    static __thread size_t cap[3];
    if (cap[which] < bytes) {
        free(buf[which]);
        cap[which] = (bytes + 4095) / 4096 * 4096;
        buf[which] = aligned_alloc(64, cap[which]);
        if (!buf[which]) cap[which] = 0;
    }
    return buf[which];
}

typedef struct {
    sp_job *j;
    const float *x;
    int64_t sr, sc;
    void *buf;
    atomic_long next; /* next batch tile to prepare */
} prep_arg;

/* Row n of x, fp32, zero padded to Kp (a copy in tmp unless x is contiguous and K = Kp). */
static const float *x_row(const prep_arg *p, int64_t n, float *tmp) {
    const sp_job *j = p->j;
    if (p->sc == 1 && j->K == j->Kp) return p->x + n * p->sr;
    memset(tmp + j->K, 0, sizeof(float) * (size_t)(j->Kp - j->K));
    for (int64_t k = 0; k < j->K; k++) tmp[k] = p->x[n * p->sr + k * p->sc];
    return tmp;
}

static inline TAMX __m512i lane_x16(void) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(16));
}

/* bf16: x[k..k+31] of one batch row into its column of the hi and lo B tiles (one pair per tile row). */
static inline TAMX void prep_bf16_step(const float *xk, uint32_t *hi, uint32_t *lo) {
    __m512 a = _mm512_loadu_ps(xk), b = _mm512_loadu_ps(xk + 16);
    /* cvtne2ps_pbh(b, a): a's values in the low 16 words, b's in the high ones, i.e. x[k..k+31] in
     * order, so each 32-bit lane is the pair (x[k+2i], x[k+2i+1]) that B tile row i wants. */
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    __m512 hb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    __m512i l = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha)); /* exact residuals */
    _mm512_i32scatter_epi32(hi, lane_x16(), h, 4);
    _mm512_i32scatter_epi32(lo, lane_x16(), l, 4);
}

/* int8: x[k..k+63] of one batch row, quantized (inv = 1 / sx), as digits into the lo / hi B tiles. */
static inline TAMX void prep_i8_step(const float *xk, __m512 inv, uint32_t *lo, uint32_t *hi) {
    const __m512i lim = _mm512_set1_epi32(32767), nlim = _mm512_set1_epi32(-32767);
    __m128i l[4], h[4];
    for (int q = 0; q < 4; q++) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xk + 16 * q), inv)); /* RNE */
        v = _mm512_max_epi32(_mm512_min_epi32(v, lim), nlim);
        l[q] = _mm512_cvtepi32_epi8(v);                       /* q & 255 */
        h[q] = _mm512_cvtepi32_epi8(_mm512_srai_epi32(v, 8)); /* floor(q / 256): -128..127 */
    }
    __m512i L = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(l[1], l[0])), _mm256_set_m128i(l[3], l[2]), 1);
    __m512i H = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(h[1], h[0])), _mm256_set_m128i(h[3], h[2]), 1);
    _mm512_i32scatter_epi32(lo, lane_x16(), L, 4);
    _mm512_i32scatter_epi32(hi, lane_x16(), H, 4);
}

/* One batch tile (16 rows of x), column step by column step so the 1 KB B tiles being filled stay in L1. */
static TAMX void prep_tile(const prep_arg *p, int64_t bt, float *tmp) {
    const sp_job *j = p->j;
    const int64_t Kp = j->Kp, T = nbt(j->N);
    const int nn = j->N - 16 * bt < 16 ? (int)(j->N - 16 * bt) : 16;
    const float *xr[16];
    for (int i = 0; i < nn; i++) xr[i] = x_row(p, 16 * bt + i, tmp + i * Kp);
    uint32_t *t0 = (uint32_t *)p->buf + bt * Kp * 8; /* bf16: hi tiles; int8: lo digits */
    if (j->fmt == FMT_BF16) {
        uint32_t *t1 = t0 + T * Kp * 8;
        for (int64_t k = 0; k < Kp; k += 32)
            for (int i = 0; i < nn; i++) prep_bf16_step(xr[i] + k, t0 + k * 8 + i, t1 + k * 8 + i);
        return;
    }
    t0 = (uint32_t *)p->buf + bt * Kp * 4;
    uint32_t *t1 = t0 + T * Kp * 4;
    float *sx = (float *)((char *)p->buf + T * Kp * 32) + 16 * bt;
    __m512 inv[16];
    for (int i = 0; i < nn; i++) {
        __m512 m = _mm512_setzero_ps();
        __mmask16 nan = 0;
        for (int64_t k = 0; k < Kp; k += 16) {
            __m512 v = _mm512_loadu_ps(xr[i] + k);
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        }
        float amax = _mm512_reduce_max_ps(m);
        sx[i] = amax > 0.f ? amax / 32767.f : 1.f;
        inv[i] = _mm512_set1_ps(1.f / sx[i]);
        if (nan) sx[i] = __builtin_nanf(""); /* a NaN in the row makes its outputs NaN, as in fp32 */
    }
    for (int64_t k = 0; k < Kp; k += 64)
        for (int i = 0; i < nn; i++) prep_i8_step(xr[i] + k, inv[i], t0 + k * 4 + i, t1 + k * 4 + i);
}

/* Each thread claims batch tiles from p->next until none are left (see pool_run). */
static void prep_worker(void *arg, int t, int nt) {
    prep_arg *p = (prep_arg *)arg;
    (void)t;
    (void)nt;
    const sp_job *j = p->j;
    int contiguous = p->sc == 1 && j->K == j->Kp;
    float *tmp = contiguous ? NULL : (float *)scratch(1, sizeof(float) * 16 * (size_t)j->Kp);
    if (!contiguous && !tmp) abort(); /* 16 rows of x per thread, kept: fails only when out of memory */
    for (int64_t bt; (bt = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed)) < nbt(j->N);)
        prep_tile(p, bt, tmp);
}

void sp_amx_prep_x(sp_job *j, const float *x, int64_t sr, int64_t sc, void *buf, int nthreads) {
    prep_arg p = {j, x, sr, sc, buf, 0};
    int64_t T = nbt(j->N);
    if (j->N % 16) { /* padding batch rows of the last tile: zero (their results are dropped anyway) */
        size_t per = j->fmt == FMT_BF16 ? (size_t)j->Kp * 32 : (size_t)j->Kp * 16;
        for (int part = 0; part < 2; part++) memset((char *)buf + (size_t)(part * T + T - 1) * per, 0, per);
    }
    pool_run(prep_worker, &p, T < 2 ? 1 : nthreads); /* one tile: not worth waking the pool */
    j->xamx = buf;
}

/* ---- the kernel ----
 * Rows are processed in blocks of RB = 32 (two A tiles). K is cut into chunks of CW mask words (8 column
 * steps: 16 KB of decoded A tiles, which stay in L1).
 * - Few batch rows (one pass of C tiles covers x: bf16 <= 32 rows, int8 <= 16): per block, C stays in
 *   the tile registers over the whole K, and chunk c + 1 is decoded (vector units) in slices between
 *   the tile steps of chunk c (AMX unit), so decoding and multiplying overlap.
 * - More batch rows: super-blocks of SB rows; for each K chunk, each block's chunk is decoded once and
 *   multiplied against every batch tile, the C tiles waiting in cacc between chunks. When x is large,
 *   SB = 256 rows share each K chunk of x while it sits in L2. */
#define RB 32
#define SB_MAX 256
#define X_SMALL (1 << 20) /* bytes of prepared x below which x stays in L2 anyway */

enum { PASS_BF16_PAIR, PASS_BF16_ONE, PASS_I8_ONE };

typedef struct {
    const sp_job *j;
    int64_t T, S;          /* batch tiles; column steps (32 bf16 / 64 int8 columns) */
    int64_t cw;            /* mask words per K chunk */
    int spw, nc, esz;      /* steps per mask word; C tiles per (block half, batch tile): 1, int8 2; value bytes */
    const uint8_t *xb[2];  /* B tiles: bf16 hi, lo; int8 hi digits, lo digits */
    uint8_t *abuf[2], *cacc;
    const char *vp[SB_MAX]; /* next value of each row of the super-block */
    int pf_lines;          /* cache lines of values per row and chunk, on average: prefetched */
} ctx;

/* Decode words [w0, w1) of block rows [i0, i1) (weight row r + i, next values vp[i]) into ab: local step
 * s of block row i at ab + (s * RB + i) * 64, so each A tile is 1 KB contiguous. Prefetches each row's
 * next chunk into L2. */
static TAMX void decode_rows(ctx *c, uint8_t *ab, int64_t r, int i0, int i1, const char **vp, int64_t w0, int64_t w1) {
    const sp_job *j = c->j;
    const int64_t KW = j->KW;
    for (int i = i0; i < i1; i++) {
        const uint64_t *m = j->mask + (r + i) * KW;
        uint8_t *d = ab + i * 64;
        if (j->fmt == FMT_BF16) {
            const uint16_t *v = (const uint16_t *)vp[i];
            for (int64_t w = w0; w < w1; w++, d += 2 * RB * 64) {
                uint64_t b = m[w];
                __mmask32 k0 = (__mmask32)b, k1 = (__mmask32)(b >> 32);
                __m512i e0 = _mm512_maskz_expand_epi16(k0, _mm512_loadu_si512(v));
                v += __builtin_popcount(k0);
                __m512i e1 = _mm512_maskz_expand_epi16(k1, _mm512_loadu_si512(v));
                v += __builtin_popcount(k1);
                _mm512_store_si512(d, e0);
                _mm512_store_si512(d + RB * 64, e1);
            }
            vp[i] = (const char *)v;
        } else {
            const int8_t *v = (const int8_t *)vp[i];
            for (int64_t w = w0; w < w1; w++, d += RB * 64) {
                uint64_t b = m[w];
                _mm512_store_si512(d, _mm512_maskz_expand_epi8(b, _mm512_loadu_si512(v)));
                v += __builtin_popcountll(b);
            }
            vp[i] = (const char *)v;
        }
        if (w1 < KW) {
            _mm_prefetch((const char *)(m + w1), _MM_HINT_T1);
            for (int l = 0; l < c->pf_lines; l++) _mm_prefetch(vp[i] + 64 * l, _MM_HINT_T1);
        }
    }
}

/* Rows nr..RB-1 of every step of a chunk buffer: zero (the decoder never writes them). */
static void zero_rows(const ctx *c, uint8_t *ab, int nr) {
    for (int64_t s = 0; nr < RB && s < c->cw * c->spw; s++) memset(ab + (s * RB + nr) * 64, 0, (size_t)(RB - nr) * 64);
}

/* C tile (block b of the super-block, batch tile bt, half a, digit d). */
static inline uint8_t *ctile(const ctx *c, int64_t b, int64_t bt, int a, int d) {
    return c->cacc + (((b * c->T + bt) * 2 + a) * c->nc + d) * 1024;
}

/* Tile registers: C 0-3, A 4-5, B 6-7.
 *   PASS_BF16_PAIR: batch tiles bt, bt + 1; C[a][b] in tmm(2a + b).
 *   PASS_BF16_ONE:  batch tile bt; C[a] in tmm(2a).
 *   PASS_I8_ONE:    batch tile bt; tmm(2a) sums W * hi digits (TDPBSSD), tmm(2a + 1) W * lo digits (TDPBSUD).
 * ct[t]: memory of tmm t (cacc). */
static inline TAMX void pass_tiles(const ctx *c, int kind, int64_t b, int64_t bt, uint8_t *ct[4]) {
    if (kind == PASS_BF16_PAIR) {
        ct[0] = ctile(c, b, bt, 0, 0); ct[1] = ctile(c, b, bt + 1, 0, 0);
        ct[2] = ctile(c, b, bt, 1, 0); ct[3] = ctile(c, b, bt + 1, 1, 0);
    } else {
        ct[0] = ctile(c, b, bt, 0, 0); ct[2] = ctile(c, b, bt, 1, 0);
        ct[1] = kind == PASS_I8_ONE ? ctile(c, b, bt, 0, 1) : NULL;
        ct[3] = kind == PASS_I8_ONE ? ctile(c, b, bt, 1, 1) : NULL;
    }
}

static inline TAMX void c_begin(int kind, uint8_t *ct[4], int load) {
    if (!load) {
        _tile_zero(0); _tile_zero(2);
        if (kind != PASS_BF16_ONE) { _tile_zero(1); _tile_zero(3); }
        return;
    }
    _tile_loadd(0, ct[0], 64); _tile_loadd(2, ct[2], 64);
    if (kind != PASS_BF16_ONE) { _tile_loadd(1, ct[1], 64); _tile_loadd(3, ct[3], 64); }
}

static inline TAMX void c_end(int kind, uint8_t *ct[4]) {
    _tile_stored(0, ct[0], 64); _tile_stored(2, ct[2], 64);
    if (kind != PASS_BF16_ONE) { _tile_stored(1, ct[1], 64); _tile_stored(3, ct[3], 64); }
}

/* One column step: A tiles from local step s of ab, B tiles from global step sg of x. */
static inline TAMX void step(const ctx *c, int kind, const uint8_t *ab, int64_t s, int64_t bt, int64_t sg) {
    const uint8_t *a = ab + s * RB * 64, *b0 = c->xb[0] + (bt * c->S + sg) * 1024, *b1 = c->xb[1] + (bt * c->S + sg) * 1024;
    _tile_loadd(4, a, 64);
    _tile_loadd(5, a + 1024, 64);
    if (kind == PASS_BF16_PAIR) {
        const int64_t nx = c->S * 1024; /* next batch tile */
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b0 + nx, 64);
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(6, b1, 64);
        _tile_loadd(7, b1 + nx, 64);
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    } else if (kind == PASS_BF16_ONE) {
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(0, 4, 7); _tile_dpbf16ps(2, 5, 7);
    } else {
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
        _tile_dpbssd(0, 4, 6); _tile_dpbssd(2, 5, 6); _tile_dpbsud(1, 4, 7); _tile_dpbsud(3, 5, 7);
    }
}

/* In-register transpose of a 16 x 16 fp32 tile: r[i][jj] -> r[jj][i]. */
static inline TAMX void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + q], 128-bit lane L: column 4L + q of rows 4i .. 4i + 3 */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);
        t[4 + q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);
        t[8 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
        t[12 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
        r[4 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88);
        r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xDD);
        r[12 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xDD);
    }
}

/* y[n0 + jj][r0 + i] = C[i][jj] (* sx[n0 + jj] * scale[r0 + i]) + bias[r0 + i], i < nr, jj < nn:
 * scaled row by row, transposed in registers, stored as 16 contiguous outputs per batch row.
 * int8: C = 256 * (hi-digit sums) + (lo-digit sums); the int32 sums are exact, this rounds once. */
static TAMX void store_tile(const ctx *c, const uint8_t *ct, int64_t r0, int nr, int64_t n0, const float *sx) {
    const sp_job *j = c->j;
    const int nn = j->N - n0 < 16 ? (int)(j->N - n0) : 16;
    const __m512 xs = sx ? _mm512_maskz_loadu_ps((__mmask16)((1u << nn) - 1), sx + n0) : _mm512_set1_ps(1.f);
    __m512 v[16];
    for (int i = 0; i < 16; i++) {
        if (i >= nr) {
            v[i] = _mm512_setzero_ps();
            continue;
        }
        if (sx) {
            __m512 h = _mm512_cvtepi32_ps(_mm512_load_si512(ct + 64 * i));
            __m512 l = _mm512_cvtepi32_ps(_mm512_load_si512(ct + 1024 + 64 * i));
            v[i] = _mm512_mul_ps(_mm512_fmadd_ps(h, _mm512_set1_ps(256.f), l),
                                 _mm512_mul_ps(xs, _mm512_set1_ps(j->scales[r0 + i])));
        } else
            v[i] = _mm512_load_ps((const float *)(ct + 64 * i));
    }
    transpose16(v);
    const __mmask16 km = (__mmask16)((1u << nr) - 1);
    const __m512 bias = j->bias ? _mm512_maskz_loadu_ps(km, j->bias + r0) : _mm512_setzero_ps();
    for (int jj = 0; jj < nn; jj++) _mm512_mask_storeu_ps(j->y + (n0 + jj) * j->M + r0, km, _mm512_add_ps(v[jj], bias));
}

static inline int pass_kind(const ctx *c, int64_t bt) {
    return c->j->fmt == FMT_I8 ? PASS_I8_ONE : bt + 1 < c->T ? PASS_BF16_PAIR : PASS_BF16_ONE;
}

/* Write the C tiles of blocks [0, nb) of the super-block starting at row r0 (rows < r1) to y. */
static TAMX void store_blocks(const ctx *c, int64_t r0, int64_t r1, int64_t nb) {
    const sp_job *j = c->j;
    const float *sx = j->fmt == FMT_I8 ? (const float *)((const char *)j->xamx + c->T * j->Kp * 32) : NULL;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t bt = 0; bt < c->T; bt++)
            for (int a = 0; a < 2; a++) {
                int64_t r = r0 + b * RB + 16 * a;
                if (r < r1) store_tile(c, ctile(c, b, bt, a, 0), r, r1 - r < 16 ? (int)(r1 - r) : 16, 16 * bt, sx);
            }
}

/* Rows [r0, r1) (at most SB_MAX): work items (K chunk, block of RB rows), chunk-major. While item k is
 * multiplied (AMX unit), item k + 1 is decoded (vector units) in slices between its tile steps, into
 * the other chunk buffer. With one block and one pass of C tiles, C stays in the tile registers over
 * the whole K; otherwise the C tiles wait in cacc between chunks. */
static TAMX void super_block(ctx *c, int64_t r0, int64_t r1) {
    const sp_job *j = c->j;
    const int64_t nb = (r1 - r0 + RB - 1) / RB, nchunks = (j->KW + c->cw - 1) / c->cw, items = nchunks * nb;
    const int passes = j->fmt == FMT_I8 ? (int)c->T : (int)((c->T + 1) / 2);
    const int keep = nb == 1 && passes == 1;
    for (int64_t r = r0; r < r1; r++) c->vp[r - r0] = (const char *)j->vals + c->esz * j->rowptr[r];
#define ITEM_ROWS(k) (r1 - (r0 + ((k) % nb) * RB) < RB ? (int)(r1 - (r0 + ((k) % nb) * RB)) : RB)
#define ITEM_W0(k) (((k) / nb) * c->cw)
#define ITEM_W1(k) (ITEM_W0(k) + c->cw < j->KW ? ITEM_W0(k) + c->cw : j->KW)
    if (ITEM_ROWS(0) < RB) zero_rows(c, c->abuf[0], ITEM_ROWS(0));
    decode_rows(c, c->abuf[0], r0, 0, ITEM_ROWS(0), c->vp, 0, ITEM_W1(0));
    for (int64_t k = 0; k < items; k++) {
        const int64_t b = k % nb, w0 = ITEM_W0(k), ns = (ITEM_W1(k) - w0) * c->spw;
        const uint8_t *cur = c->abuf[k & 1];
        uint8_t *nxt = c->abuf[(k + 1) & 1];
        /* the next item, decoded in slices: rows [nn * g / total, nn * (g + 1) / total) after step g */
        const int nn = k + 1 < items ? ITEM_ROWS(k + 1) : 0;
        const int64_t nr_ = r0 + ((k + 1) % nb) * RB, total = passes * ns;
        if (nn && nn < RB) zero_rows(c, nxt, nn);
        int64_t g = 0;
        for (int64_t bt = 0; bt < c->T;) {
            const int kind = pass_kind(c, bt);
            uint8_t *ct[4];
            pass_tiles(c, kind, b, bt, ct);
            if (!keep || w0 == 0) c_begin(kind, ct, w0 > 0);
            for (int64_t s = 0; s < ns; s++, g++) {
                step(c, kind, cur, s, bt, w0 * c->spw + s);
                if (nn)
                    decode_rows(c, nxt, nr_, (int)(nn * g / total), (int)(nn * (g + 1) / total),
                                c->vp + ((k + 1) % nb) * RB, ITEM_W0(k + 1), ITEM_W1(k + 1));
            }
            if (!keep || ITEM_W1(k) == j->KW) c_end(kind, ct);
            bt += kind == PASS_BF16_PAIR ? 2 : 1;
        }
    }
#undef ITEM_ROWS
#undef ITEM_W0
#undef ITEM_W1
    store_blocks(c, r0, r1, nb);
}

TAMX void sp_spmm_amx(const sp_job *j, int64_t r0, int64_t r1) {
    if (j->KW == 0) { /* no columns: y = bias */
        for (int64_t r = r0; r < r1; r++)
            for (int64_t n = 0; n < j->N; n++) sp_store(j, n, r, 0.f);
        return;
    }
    ctx *c = (ctx *)scratch(2, sizeof(ctx));
    if (!c) abort(); /* scratch is a few hundred KB per thread, kept: fails only when out of memory */
    memset(c, 0, sizeof(*c));
    c->j = j;
    c->T = nbt(j->N);
    c->spw = j->fmt == FMT_BF16 ? 2 : 1;
    c->S = j->KW * c->spw;
    c->cw = j->fmt == FMT_BF16 ? 4 : 8; /* 8 steps per chunk: 16 KB of decoded A tiles */
    c->nc = j->fmt == FMT_BF16 ? 1 : 2;
    c->esz = j->fmt == FMT_BF16 ? 2 : 1;
    const uint8_t *xa = (const uint8_t *)j->xamx;
    if (j->fmt == FMT_BF16) {
        c->xb[0] = xa;
        c->xb[1] = xa + c->T * j->Kp * 32;
    } else {
        c->xb[1] = xa;
        c->xb[0] = xa + c->T * j->Kp * 16;
    }
    double row_chunk_bytes = (double)(j->rowptr[j->M] - j->rowptr[0]) * c->esz / (double)j->M * c->cw / j->KW;
    c->pf_lines = (int)(row_chunk_bytes / 64) + 2;
    if (c->pf_lines > 16) c->pf_lines = 16;
    const int64_t sb = sp_amx_xbytes(j->fmt, j->N, j->Kp) <= X_SMALL ? RB : SB_MAX;
    const size_t chunk = (size_t)(c->cw * c->spw * RB * 64);
    c->abuf[0] = (uint8_t *)scratch(0, 2 * chunk + (size_t)(sb / RB * c->T * 2 * c->nc * 1024));
    if (!c->abuf[0]) abort();
    c->abuf[1] = c->abuf[0] + chunk;
    c->cacc = c->abuf[1] + chunk;
    tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { /* every tile is 16 rows of 64 bytes */
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    for (int64_t r = r0; r < r1; r += sb) super_block(c, r, r + sb < r1 ? r + sb : r1);
    _tile_release();
}

#else
int sp_amx_available(void) { return 0; }
size_t sp_amx_xbytes(int fmt, int64_t N, int64_t Kp) {
    (void)fmt; (void)N; (void)Kp;
    return 0;
}
void sp_amx_prep_x(sp_job *j, const float *x, int64_t sr, int64_t sc, void *buf, int nthreads) {
    (void)j; (void)x; (void)sr; (void)sc; (void)buf; (void)nthreads;
}
void sp_spmm_amx(const sp_job *j, int64_t r0, int64_t r1) { sp_spmm_portable(j, r0, r1); }
#endif
