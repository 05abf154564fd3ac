/* CPython binding of the W8A8 kernels (registered in module.c as _kernels.w8a8_matmul).
 *
 * Quantizes x per token to int8 (shifted to u8, see w8a8_common.h), splits the weight rows across the
 * shared thread pool (pool.c) and runs the chosen ISA's kernel, with the GIL released. The rounding is
 * the one of sparseft.quant.activations (q = clamp(round_half_even(x / s), -127, 127), s = max|x| / 127
 * or 1 for an all-zero token, or the given static scale), so the int8 activations are bit-identical
 * to torch's `quantize_per_token` / `quantize_activation`. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sparse_common.h"
#include "w8a8_common.h"

float w8a8_quantize_row_avx512(const float *x, int64_t K, float scale, uint8_t *out);

static int w8_isa_ok(int isa) {
    if (isa == ISA_PORTABLE) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    return 0;
}

/* Ties to even for |v| <= 2^22 in the default rounding mode: adding then subtracting 1.5 * 2^23 leaves
 * the integer the addition rounded to (same result as nearbyintf, without a libm call). */
static inline float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

/* One token: u8 q + 128 for columns [0, K), 128 (q = 0) for the padding up to Kp; returns the scale. */
static float quantize_row(const float *x, int64_t sc, int64_t K, int64_t Kp, float static_scale, uint8_t *out) {
    float s = static_scale;
    if (!(s > 0.f)) {
        float amax = 0.f;
        for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(x[k * sc]));
        s = amax > 0.f ? amax / 127.f : 1.f;
    }
    for (int64_t k = 0; k < K; k++) {
        float v = x[k * sc] / s;
        v = v > 128.f ? 128.f : (v < -128.f ? -128.f : (v == v ? v : 0.f)); /* clip first: round_even needs |v| <= 2^22 */
        float q = round_even(v);
        q = q > 127.f ? 127.f : (q < -127.f ? -127.f : q);
        out[k] = (uint8_t)((int)q + 128);
    }
    memset(out + K, 128, (size_t)(Kp - K));
    return s;
}

typedef struct {
    w8_job job;
    w8_kernel kern;
} w8_task;

static void w8_run(const void *arg, int64_t r0, int64_t r1) {
    const w8_task *tk = (const w8_task *)arg;
    tk->kern(&tk->job, r0, r1);
}

PyObject *py_w8a8_matmul(PyObject *self, PyObject *args) {
    (void)self;
    int isa, nthreads, raw_acc = 0;
    long long M, K, KW, mask, vals, rowptr, scales, rowsum, bias, x, N, sr, sc, y;
    double in_scale = 0.0;
    if (!PyArg_ParseTuple(args, "iLLLLLLLLLLLLLLi|dp", &isa, &M, &K, &KW, &mask, &vals, &rowptr, &scales, &rowsum,
                          &bias, &x, &N, &sr, &sc, &y, &nthreads, &in_scale, &raw_acc))
        return NULL;
    if (isa == 3) isa = ISA_AVX512; /* the AMX request of the fp32-activation kernels: VNNI here */
    if (isa < 0 || isa > 2 || !w8_isa_ok(isa) || M < 0 || K < 0 || K > W8A8_MAX_K || KW * 64 < K || N < 0 ||
        !scales || !rowsum || !(in_scale >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "_kernels.w8a8_matmul: bad ISA, sizes (K <= 65536), scales or rowsum");
        return NULL;
    }
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    if (M == 0 || N == 0) Py_RETURN_NONE;

    w8_task tk;
    memset(&tk, 0, sizeof(tk));
    w8_job *j = &tk.job;
    j->M = M; j->K = K; j->KW = KW; j->Kp = 64 * KW;
    j->mask = (const uint64_t *)(intptr_t)mask;
    j->vals = (const int8_t *)(intptr_t)vals;
    j->rowptr = (const int64_t *)(intptr_t)rowptr;
    j->wscale = (const float *)(intptr_t)scales;
    j->rowsum = (const int32_t *)(intptr_t)rowsum;
    j->bias = (const float *)(intptr_t)bias;
    j->N = N;
    if (raw_acc) j->acc_out = (int32_t *)(intptr_t)y;
    else j->y = (float *)(intptr_t)y;
    const int64_t Kp = j->Kp;
    size_t xbytes = (size_t)(N * Kp), bytes = xbytes + sizeof(float) * (size_t)N + 64;
    uint8_t *buf = (uint8_t *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!buf) return PyErr_NoMemory();
    float *xs = (float *)(buf + (xbytes + 63) / 64 * 64);
    const float *xp = (const float *)(intptr_t)x;
    tk.kern = isa == ISA_AVX512 ? w8a8_avx512 : isa == ISA_AVX2 ? w8a8_avx2 : w8a8_portable;

    Py_BEGIN_ALLOW_THREADS
    if (isa == ISA_AVX2) w8a8_avx2_init();
    for (int64_t n = 0; n < N; n++) {
        uint8_t *out = buf + n * Kp;
        if (isa == ISA_AVX512 && sc == 1) {
            xs[n] = w8a8_quantize_row_avx512(xp + n * sr, K, (float)in_scale, out);
            memset(out + K, 128, (size_t)(Kp - K));
        } else {
            xs[n] = quantize_row(xp + n * sr, sc, K, Kp, (float)in_scale, out);
        }
    }
    j->xu = buf;
    j->xscale = xs;
    pool_run_rows(w8_run, &tk, j->rowptr, M, KW, 1, 4, nthreads);
    Py_END_ALLOW_THREADS
    free(buf);
    Py_RETURN_NONE;
}
