/* Shared definitions of the sparse runtime kernels.
 *
 * Weight layout (see format.py for the full description): a row-major bitmask of M rows, KW 64-bit
 * words per row (bit j of word w = column 64*w + j is stored), the nonzero values packed row by row in
 * column order, and rowptr[r] = index of row r's first value. Values are fp32, bf16 (raw uint16 bits),
 * int8 with one fp32 scale per row, fp16 (IEEE half bits), or int4: 4-bit codes u (weight = (u - 8) *
 * scale of its row and group of 128 columns), two per byte, value i in the low nibble of byte i / 2 when
 * i is even. The values buffer carries 64 bytes of
 * padding at its end so the AVX2 path may over-read a partial vector.
 *
 * Adding a value format: a FMT_ id and its SP_FORMATS row here, a case in sp_load_val (portable and
 * delta kernels) and in the decode step of each vector kernel (kern_avx2.c, kern_avx512_*.c).
 */
#ifndef SPARSEFT_SPARSE_COMMON_H
#define SPARSEFT_SPARSE_COMMON_H

#include <stdint.h>
#include <stddef.h>

#include <string.h>

/* Kernel ids of the value formats and their table: name, bits per value, scales. The Python
 * registry (sparseft/runtime/formats.py) checks its formats against this table (_kernels.formats())
 * at import, so neither side relies on an order. */
enum { FMT_F32 = 0, FMT_BF16 = 1, FMT_I8 = 2, FMT_F16 = 3, FMT_I4 = 4, FMT_COUNT = 5 };
static const struct {
    const char *name;
    int bits, has_scales;
} SP_FORMATS[FMT_COUNT] = {
    [FMT_F32] = {"fp32", 32, 0},
    [FMT_BF16] = {"bf16", 16, 0},
    [FMT_I8] = {"int8", 8, 1},
    [FMT_F16] = {"fp16", 16, 0},
    [FMT_I4] = {"int4", 4, 1},
};
/* Bytes per value of the whole-byte formats (int4 runs its own kernels, kern_int4.c). */
#define SP_ESIZE(fmt) (SP_FORMATS[fmt].bits / 8)
/* int4: columns per scale group (two mask words), groups per row. */
#define I4_GROUP 128
#define I4_GROUPS(KW) (((KW) + 1) / 2)
enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

/* The best code path this CPU runs (cpu.c; the one place CPU features are read). AVX-512 needs
 * F/BW/VL/DQ/VBMI/VBMI2/VNNI; AVX2 needs AVX2/FMA/F16C. */
int sp_best_isa(void);
/* Batch-1 int8 kernels: 1 = rows one after another (one sequential stream; measured faster on AMD Zen 4),
 * 0 = tiles of 4 rows side by side (Intel). Set from the CPU's vendor at import (sp_default_sequential),
 * changeable with _kernels.set_spmv_sequential. Weights with every column stored (sp_weight.full) always
 * take 4-row tiles of plain loads. */
extern int sp_spmv_sequential;
int sp_default_sequential(void);

/* A weight, packed once per layer by _kernels.pack (module.c): sizes and raw addresses. */
typedef struct {
    int fmt, delta;                /* delta: mask holds the uint8 gap index (kern_delta.c) */
    int64_t M, K, KW;
    const void *mask;
    const void *vals;
    const int64_t *rowptr;
    const float *scales;           /* per-row value scales (int8), NULL when the format has none */
    const int32_t *rowsum;         /* int8: sum of each row's values, NULL otherwise */
    const float *bias;             /* NULL when absent */
    /* 1 when a bitmask weight stores every column (rowptr[r] = r * K, every mask bit below K set): a
     * dense matrix in the sparse layout, e.g. an int8 lm_head, whose batch-1 kernels then read no mask
     * and expand nothing. Found once by _kernels.pack. */
    int full;
} sp_weight;

/* y[N][M] = x W^T + b with fp32 x (element strides sr, sc); returns 0, or -1 when out of memory. */
int sp_run_fp(const sp_weight *w, const float *x, int64_t N, int64_t sr, int64_t sc, float *y, int isa,
              int nthreads);
/* W8A8 (w8a8_run.c): x quantized to int8 per token (in_scale 0) or with in_scale; y fp32, or int32
 * accumulators when raw_acc. Returns 0, or -1 when out of memory. */
int sp_run_w8a8(const sp_weight *w, const float *x, int64_t N, int64_t sr, int64_t sc, void *y, int isa,
                int nthreads, float in_scale, int raw_acc);
/* Per-token (in_scale 0) or static int8 quantization of N contiguous rows of K floats (row stride sr), as
 * the W8A8 kernels round: signed q [N][K], scales xs [N]. */
void sp_quantize_rows(const float *x, int64_t N, int64_t sr, int64_t K, int isa, float in_scale, int8_t *q,
                      float *xs);

/* IEEE half bits to float, exact (subnormals, inf and NaN included): the portable decoder of fp16. */
static inline float sp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (!man) {
        bits = sign;
    } else { /* subnormal: normalize */
        int e = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            e--;
        }
        bits = sign | ((uint32_t)e << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float sp_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* int4 code i (0..15) of a values buffer. */
static inline int sp_i4_code(const void *vals, int64_t i) {
    return (((const uint8_t *)vals)[i >> 1] >> (4 * (i & 1))) & 15;
}

/* Stored value i of a row's format, as fp32 (int8 / int4: before its scale). */
static inline float sp_load_val(int fmt, const void *vals, int64_t i) {
    switch (fmt) {
    case FMT_I4: return (float)(sp_i4_code(vals, i) - 8);
    case FMT_F32: return ((const float *)vals)[i];
    case FMT_BF16: return sp_bf16_to_f32(((const uint16_t *)vals)[i]);
    case FMT_I8: return (float)((const int8_t *)vals)[i];
    default: return sp_f16_to_f32(((const uint16_t *)vals)[i]);
    }
}

/* The int8 values of mask word b from p in their columns (AVX-512 kernels): a word with every column
 * stored (dense rows, e.g. an int8 lm_head) takes a plain load instead of vpexpandb (-8% on SmolLM2's). */
#define SP_LOAD_OR_EXPAND_EPI8(b, p)                                                                  \
    ((b) == ~0ULL ? _mm512_loadu_si512((const void *)(p))                                          \
                  : _mm512_maskz_expand_epi8((b), _mm512_loadu_si512((const void *)(p))))

/* Cache level the software prefetches of the sparse (bitmask) kernels fill: L1 (-DSP_PF_HINT=... to try). */
#ifndef SP_PF_HINT
#define SP_PF_HINT _MM_HINT_T0
#endif
/* Software prefetch distance (bytes ahead on each of the 4 row streams) of the batch-1 kernels of
 * weights with every column stored (sp_weight.full). SmolLM2's lm_head on Zen 5, session 10 (int8): 0: 1.07,
 * 1024: 0.93, 4096: 0.79, 16384: 0.83 ms; session 11, 3 A/B pairs (benchmarks/head_formats.py): 4096:
 * int8 1.26-1.48, int4 0.57-0.79 ms; 8192: int8 1.05-1.13, int4 0.45-0.47 ms. -DSP_FULL_PF_DIST=N to try. */
#ifndef SP_FULL_PF_DIST
#define SP_FULL_PF_DIST 8192
#endif
/* ... and of the dense-row kernels: L2. A weight larger than the L3 (GPT-2's 50257 x 768 int8 head, 38.6 MB)
 * streamed at 10-14 GB/s with prefetches into L1 and at 20-37 GB/s into L2 (T1 or T2, 3 A/B builds, Zen 5,
 * 1 thread; torch.sum reads 25 GB/s): L1's miss buffers, not DRAM, held the stream. Whole steps, 2 A/B
 * builds: GPT-2 70% int8 6.4 -> 4.5-4.8 ms, W8A8 5.6 -> 4.1-4.4 ms; SmolLM2 50% int8 + int8 head 8.4-9.3 ->
 * 7.3 ms; 70% W8A8 + int4 head unchanged (4.0-4.4 ms). Prefetching the sparse kernels into L2 too slowed
 * SmolLM2's 70% W8A8 step (4.1 -> 5.0 ms), so they keep L1. */
#ifndef SP_FULL_PF_HINT
#define SP_FULL_PF_HINT _MM_HINT_T1
#endif
#define SP_FULL_PF(p) _mm_prefetch((const char *)(p) + SP_FULL_PF_DIST, SP_FULL_PF_HINT)
/* Prefetch distance (bytes) of the values stream of the sequential batch-1 W8A8 rows (0: none, e.g.
 * -DSP_SEQ_PF_DIST=0). Decode steps on Zen 5, 1 thread, 4-6 A/B builds each (`decode_breakdown --native`):
 * SmolLM2 50% W8A8 3.40-3.65 ms with none, 3.14-3.26 ms at 4096 B; 70% unchanged (2.83-3.09 vs 2.84-3.04);
 * 256 and 1024 B no better, 8192 B mixed. The same prefetch in the weight-only int8 rows (spmv_i8_seq)
 * made the 50% int8 step slower (4.33-4.60 -> 5.54-5.82 ms), so they have none. */
#ifndef SP_SEQ_PF_DIST
#define SP_SEQ_PF_DIST 4096
#endif
#define SP_SEQ_PF(p)                                                                                   \
    do {                                                                                               \
        if (SP_SEQ_PF_DIST) _mm_prefetch((const char *)(p) + SP_SEQ_PF_DIST, SP_PF_HINT);             \
    } while (0)
/* Mask of the columns of a row's last word (all 64 when K is a multiple of 64). */
#define SP_TAIL_MASK(K) ((K) % 64 ? (__mmask64)((1ULL << ((K) % 64)) - 1) : ~(__mmask64)0)
/* Word w of an all-stored int8 row at p: a plain load, masked only for a partial last word (the next row's
 * values follow it; masked loads ran 3x slower than plain ones on Zen 5, all-ones mask included). */
#define SP_FULL_WORD_EPI8(p, w, KW, tail)                                                          \
    ((w) + 1 < (KW) || (tail) == ~(__mmask64)0 ? _mm512_loadu_si512((const void *)((p) + 64 * (w))) \
                                               : _mm512_maskz_loadu_epi8((tail), (p) + 64 * (w)))

/* Batch sizes above this use the nonzero-list ("broadcast") kernel on AVX-512. */
#define SMALL_BATCH_MAX 12
/* Batch lanes per tile of the broadcast kernel (two zmm of fp32). */
#define BTILE 32

typedef struct {
    int fmt;
    int64_t M, K, KW, Kp;          /* Kp = 64 * KW: padded row length */
    const uint64_t *mask;          /* delta index: uint8 gaps instead (see kern_delta.c) */
    const void *vals;
    const int64_t *rowptr;
    const float *scales;           /* int8: one per row, applied by sp_store; NULL otherwise */
    const float *gscales;          /* int4: [M][I4_GROUPS(KW)] group scales, applied in the kernel */
    const int32_t *rowsum;         /* int8: sum of the row's int8 values (VNNI offset correction) */
    const float *bias;             /* NULL when absent */
    int full;                      /* sp_weight.full: dense rows, the batch-1 kernels read no mask */
    int64_t N;                     /* batch rows of x */
    /* Activations, prepared by module.c in the layout the chosen kernel reads. */
    const float *x32;              /* [N][Kp] zero padded (bf16 SpMV: even/odd de-interleaved), or [tiles][Kp][BTILE] for the broadcast kernel */
    const uint8_t *xq_lo, *xq_hi;  /* x quantized to 16 bits as two u8 digits, [N][Kp] (VNNI SpMV) */
    const float *xscale;           /* [N] scale of the 16-bit quantization */
    const int8_t *xs_lo, *xs_hi;   /* int4 SpMV: x in 16 bits as signed digits, x = 256 hi + lo, [Kp] */
    const int8_t *xs_groups;       /* int4 dense rows: the same digits per group, even / odd columns apart */
    const int32_t *xgsum;          /* int4 SpMV: sum of the 16-bit x over each scale group */
    const void *xamx;              /* AMX kernels: x in B-tile layout (kern_amx.c) */
    float *y;                      /* [N][M] */
} sp_job;

typedef void (*sp_kernel)(const sp_job *job, int64_t r0, int64_t r1);

/* Epilogue shared by all kernels: y[n][r] = acc * (row scale, formats with scales) + bias. */
static inline void sp_store(const sp_job *j, int64_t n, int64_t r, float acc) {
    if (j->scales) acc *= j->scales[r];
    if (j->bias) acc += j->bias[r];
    j->y[n * j->M + r] = acc;
}

void sp_delta_portable(const sp_job *j, int64_t r0, int64_t r1);
void sp_spmm_portable(const sp_job *j, int64_t r0, int64_t r1);
void sp_avx2_init(void);
void sp_spmm_avx2(const sp_job *j, int64_t r0, int64_t r1);
void sp_spmv_avx512(const sp_job *j, int64_t r0, int64_t r1);
void sp_spmm_small_avx512(const sp_job *j, int64_t r0, int64_t r1);
void sp_spmm_bcast_avx512(const sp_job *j, int64_t r0, int64_t r1);
/* AMX (kern_amx.c): available = CPU has AMX-TILE/BF16/INT8 + AVX512-BF16 and the OS granted the tiles. */
int sp_amx_available(void);
size_t sp_amx_xbytes(int fmt, int64_t N, int64_t Kp);
void sp_amx_prep_x(sp_job *j, const float *x, int64_t sr, int64_t sc, void *buf, int nthreads);
void sp_spmm_amx(const sp_job *j, int64_t r0, int64_t r1);
/* int4 (kern_int4.c): batch 1 on AVX-512 VNNI (x prepared by sp_i4_prep_x); any batch: sp_spmm_portable. */
size_t sp_i4_xbytes(int64_t Kp);
void sp_i4_prep_x(sp_job *j, const float *x, int64_t sc, void *buf);
void sp_spmv_i4_avx512(const sp_job *j, int64_t r0, int64_t r1);
/* int4 weights with every column stored and K even (an int4 lm_head): batch 1, 4 rows of plain loads. */
size_t sp_i4_full_xbytes(int64_t KW);
void sp_i4_prep_x_full(sp_job *j, const float *x, int64_t sc, void *buf);
void sp_spmv_i4_full_avx512(const sp_job *j, int64_t r0, int64_t r1);

/* Thread pool: fn(arg, t, nthreads) runs on the caller (t = 0) and on the workers that join in time.
 * fn must claim its work from a shared atomic counter until none is left (not split it by t): a
 * worker may never join, and the caller returns once every piece is claimed and finished. */
typedef void (*pool_fn)(void *arg, int t, int nthreads);
void pool_run(pool_fn fn, void *arg, int nthreads);

/* Rows [0, M) of a bitmask-format weight (rowptr, KW words per row, esz bytes per value) run on up to
 * nthreads threads as 4 chunks per thread of about equal bytes (mask + values), chunk bounds on
 * multiples of `align` rows: call(arg, r0, r1) for each chunk. A thread whose core is busy elsewhere
 * simply takes fewer chunks (see pool_run). */
typedef void (*rows_fn)(const void *arg, int64_t r0, int64_t r1);
void pool_run_rows(rows_fn call, const void *arg, const int64_t *rowptr, int64_t M, int64_t KW, int esz,
                   int align, int nthreads);

#endif
