/* CPython bindings of the sparse kernels: sparseft.runtime._kernels.
 *
 * Functions take raw addresses (tensor.data_ptr()) and sizes, prepare x in the layout the chosen kernel
 * reads, split rows across the thread pool and release the GIL while computing. Python-side checks
 * (kernels.py) guarantee dtypes, contiguity and sizes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"

static int best_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2") &&
        __builtin_cpu_supports("avx512vnni"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_PORTABLE;
}

typedef struct {
    const float *x;
    int64_t sr, sc; /* element strides of x (row, column) */
} xsrc;

static inline float xat(const xsrc *s, int64_t n, int64_t k) { return s->x[n * s->sr + k * s->sc]; }

/* [N][Kp] fp32, zero padded. */
static void prep_rows(const xsrc *s, int64_t N, int64_t K, int64_t Kp, float *out) {
    memset(out, 0, sizeof(float) * (size_t)(N * Kp));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) out[n * Kp + k] = xat(s, n, k);
}

/* [tiles][Kp][BTILE] fp32: 16 batch rows side by side per column, zero padded. */
static void prep_tiles(const xsrc *s, int64_t N, int64_t K, int64_t Kp, float *out) {
    int64_t tiles = (N + BTILE - 1) / BTILE;
    memset(out, 0, sizeof(float) * (size_t)(tiles * Kp * BTILE));
    for (int64_t n = 0; n < N; n++) {
        float *o = out + (n / BTILE) * Kp * BTILE + (n % BTILE);
        for (int64_t k = 0; k < K; k++) o[k * BTILE] = xat(s, n, k);
    }
}

/* fp32 x de-interleaved per 32 columns: 16 even columns, then 16 odd (AVX-512 bf16 SpMV). */
static void prep_evenodd(const xsrc *s, int64_t K, int64_t Kp, float *out) {
    memset(out, 0, sizeof(float) * (size_t)Kp);
    for (int64_t k = 0; k < K; k++) out[(k & ~31) + ((k & 1) << 4) + ((k & 31) >> 1)] = xat(s, 0, k);
}

/* 16-bit symmetric quantization of x, stored as u8 digits lo = q & 255 and hi = (q >> 8) + 128. */
static void prep_q16(const xsrc *s, int64_t K, int64_t Kp, uint8_t *lo, uint8_t *hi, float *scale) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(xat(s, 0, k)));
    float sx = amax > 0.f ? amax / 32767.f : 1.f, inv = 1.f / sx;
    memset(lo, 0, (size_t)Kp);
    memset(hi, 128, (size_t)Kp);
    for (int64_t k = 0; k < K; k++) {
        int32_t q = (int32_t)lrintf(xat(s, 0, k) * inv);
        q = q > 32767 ? 32767 : (q < -32767 ? -32767 : q);
        int32_t l = q & 255;
        lo[k] = (uint8_t)l;
        hi[k] = (uint8_t)((q - l) / 256 + 128);
    }
    *scale = sx;
}

typedef struct {
    sp_job job;
    sp_kernel kern;
} task;

static void run_task(const void *arg, int64_t r0, int64_t r1) {
    const task *tk = (const task *)arg;
    tk->kern(&tk->job, r0, r1);
}

static PyObject *py_best_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(best_isa());
}

static PyObject *py_amx_available(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(sp_amx_available());
}

/* Smallest batch that runs the AMX kernels on the AVX-512 path, per value format; 0 = never. */
static int amx_min_batch[3] = {0, 0, 0};

static PyObject *py_set_amx(PyObject *self, PyObject *args) {
    (void)self;
    int bf16, i8;
    if (!PyArg_ParseTuple(args, "ii", &bf16, &i8)) return NULL;
    if ((bf16 > 0 || i8 > 0) && !sp_amx_available()) {
        PyErr_SetString(PyExc_ValueError, "_kernels.set_amx: AMX is not available on this CPU / OS");
        return NULL;
    }
    amx_min_batch[FMT_BF16] = bf16 > 0 ? bf16 : 0;
    amx_min_batch[FMT_I8] = i8 > 0 ? i8 : 0;
    Py_RETURN_NONE;
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    (void)self;
    int fmt, isa, nthreads, delta = 0;
    long long M, K, KW, mask, vals, rowptr, scales, rowsum, bias, x, N, sr, sc, y;
    if (!PyArg_ParseTuple(args, "iiLLLLLLLLLLLLLLi|p", &fmt, &isa, &M, &K, &KW, &mask, &vals, &rowptr, &scales,
                          &rowsum, &bias, &x, &N, &sr, &sc, &y, &nthreads, &delta))
        return NULL;
    if (fmt < 0 || fmt > 2 || isa < 0 || isa > best_isa() || M < 0 || K < 0 || KW * 64 < K || N < 0) {
        PyErr_SetString(PyExc_ValueError, "_kernels.matmul: bad format, ISA or sizes");
        return NULL;
    }
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    if (M == 0 || N == 0) Py_RETURN_NONE;

    task tk;
    memset(&tk, 0, sizeof(tk));
    sp_job *j = &tk.job;
    j->fmt = fmt;
    j->M = M; j->K = K; j->KW = KW; j->Kp = 64 * KW;
    j->mask = (const uint64_t *)(intptr_t)mask;
    j->vals = (const void *)(intptr_t)vals;
    j->rowptr = (const int64_t *)(intptr_t)rowptr;
    j->scales = (const float *)(intptr_t)scales;
    j->rowsum = (const int32_t *)(intptr_t)rowsum;
    j->bias = (const float *)(intptr_t)bias;
    j->N = N;
    j->y = (float *)(intptr_t)y;
    xsrc src = {(const float *)(intptr_t)x, sr, sc};
    const int64_t Kp = j->Kp;
    /* AMX (set_amx): bf16 / int8 values, bitmask index; int8: int32 sums exact while K * 127 * 255 < 2^31. */
    int use_amx = isa == ISA_AVX512 && !delta && amx_min_batch[fmt] > 0 && N >= amx_min_batch[fmt] &&
                  (fmt != FMT_I8 || K <= 65536);
    /* VNNI int32 partial sums stay exact only while K * 127 * 255 < 2^31. */
    int use_spmv = !delta && isa == ISA_AVX512 && N == 1 && (fmt != FMT_I8 || K <= 65536);
    int64_t tiles = (N + BTILE - 1) / BTILE;
    size_t bytes = use_amx ? sp_amx_xbytes(fmt, N, Kp) : use_spmv ? (size_t)Kp * 4 + 64
                   : (!delta && isa == ISA_AVX512 && N > SMALL_BATCH_MAX) ? sizeof(float) * (size_t)(tiles * Kp * BTILE)
                                                                : sizeof(float) * (size_t)(N * Kp);
    void *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return PyErr_NoMemory();

    Py_BEGIN_ALLOW_THREADS
    if (use_amx) {
        tk.kern = sp_spmm_amx;
        sp_amx_prep_x(j, src.x, sr, sc, buf, nthreads);
    } else if (use_spmv) {
        tk.kern = sp_spmv_avx512;
        if (fmt == FMT_F32) {
            prep_rows(&src, 1, K, Kp, (float *)buf);
            j->x32 = (const float *)buf;
        } else if (fmt == FMT_BF16) {
            prep_evenodd(&src, K, Kp, (float *)buf);
            j->x32 = (const float *)buf;
        } else {
            uint8_t *lo = (uint8_t *)buf, *hi = lo + Kp;
            float *sxp = (float *)(hi + Kp);
            prep_q16(&src, K, Kp, lo, hi, sxp);
            j->xq_lo = lo; j->xq_hi = hi; j->xscale = sxp;
        }
    } else if (delta) {
        tk.kern = sp_delta_portable;
        prep_rows(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    } else if (isa == ISA_AVX512 && N > SMALL_BATCH_MAX) {
        tk.kern = sp_spmm_bcast_avx512;
        prep_tiles(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    } else {
        tk.kern = isa == ISA_AVX512 ? sp_spmm_small_avx512 : isa == ISA_AVX2 ? sp_spmm_avx2 : sp_spmm_portable;
        prep_rows(&src, N, K, Kp, (float *)buf);
        j->x32 = (const float *)buf;
    }
    static const int esz[3] = {4, 2, 1};
    /* AMX works on 16-row tiles */
    pool_run_rows(run_task, &tk, j->rowptr, M, KW, esz[fmt], use_amx ? 16 : 4, nthreads);
    Py_END_ALLOW_THREADS
    free(buf);
    Py_RETURN_NONE;
}

PyObject *py_w8a8_matmul(PyObject *self, PyObject *args); /* w8a8_module.c */

static PyMethodDef methods[] = {
    {"best_isa", py_best_isa, METH_NOARGS, "best_isa() -> int: 2 = AVX-512, 1 = AVX2, 0 = portable C."},
    {"amx_available", py_amx_available, METH_NOARGS,
     "amx_available() -> bool: the CPU has AMX-TILE/BF16/INT8 and AVX512-BF16, and the OS granted the tiles."},
    {"set_amx", py_set_amx, METH_VARARGS,
     "set_amx(min_batch_bf16, min_batch_int8): matmul on the AVX-512 path runs bf16 / int8 weights of the "
     "bitmask index on the AMX kernels from these batch sizes on (0: never)."},
    {"matmul", py_matmul, METH_VARARGS,
     "matmul(fmt, isa, M, K, KW, mask, vals, rowptr, scales, rowsum, bias, x, N, x_row_stride, "
     "x_col_stride, y, nthreads, delta=False): y[N][M] = x W^T + b. Addresses are ints (0 = none); "
     "delta: mask is the uint8 gap index of the high-sparsity variant."},
    {"w8a8_matmul", py_w8a8_matmul, METH_VARARGS,
     "w8a8_matmul(isa, M, K, KW, mask, vals, rowptr, scales, rowsum, bias, x, N, x_row_stride, x_col_stride, "
     "y, nthreads, in_scale=0.0, raw_acc=False): int8 weights x int8 activations (per token, or in_scale "
     "> 0: static), y fp32 [N][M]; raw_acc: y is int32 [N][M] of the integer dot products."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_kernels", "Sparse bitmask kernels (C).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    sp_avx2_init();
    return PyModule_Create(&moddef);
}
