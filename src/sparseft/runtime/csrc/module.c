/* CPython bindings of the sparse kernels: sparseft.runtime._kernels.
 *
 *   pack(fmt, delta, M, K, mask, vals, rowptr, scales, rowsum, bias) -> handle   (once per layer)
 *   linear(handle, x, N, x_row_stride, x_col_stride, y, isa, nthreads, act, in_scale, raw_acc)
 *
 * Addresses are ints (tensor.data_ptr(), 0 = none); the handle (a capsule of an sp_weight) is valid
 * while the tensors live and are not resized. `linear` is the one entry of every matmul: act 0 = fp32
 * activations (run_fp.c), act 1 = int8 activations (W8A8, w8a8_run.c; in_scale 0 = per token, > 0 =
 * static). It releases the GIL while computing. Python-side checks (formats.py, kernels.py) guarantee
 * dtypes, contiguity and sizes; the checks here keep a wrong call from reading out of bounds where cheap. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include "sparse_common.h"
#include "w8a8_common.h"
#include "native_step.h"

extern int sp_amx_min_batch[FMT_COUNT]; /* run_fp.c */

static const char CAPSULE[] = "sparseft.runtime.weight";

static PyObject *py_best_isa(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(sp_best_isa());
}

static PyObject *py_amx_available(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(sp_amx_available());
}

static PyObject *py_formats(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *out = PyTuple_New(FMT_COUNT);
    if (!out) return NULL;
    for (int i = 0; i < FMT_COUNT; i++) {
        PyObject *row = Py_BuildValue("(siiO)", SP_FORMATS[i].name, i, SP_FORMATS[i].bits,
                                      SP_FORMATS[i].has_scales ? Py_True : Py_False);
        if (!row) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, row);
    }
    return out;
}

static PyObject *py_set_amx(PyObject *self, PyObject *args) {
    (void)self;
    int fmt, min_batch;
    if (!PyArg_ParseTuple(args, "ii", &fmt, &min_batch)) return NULL;
    if (fmt < 0 || fmt >= FMT_COUNT || (min_batch > 0 && (!sp_amx_available() || (fmt != FMT_BF16 && fmt != FMT_I8)))) {
        PyErr_SetString(PyExc_ValueError, "_kernels.set_amx: AMX runs bf16 / int8 values only, on CPUs with AMX");
        return NULL;
    }
    sp_amx_min_batch[fmt] = min_batch > 0 ? min_batch : 0;
    Py_RETURN_NONE;
}

static PyObject *py_set_spmv_sequential(PyObject *self, PyObject *arg) {
    (void)self;
    long on = PyLong_AsLong(arg);
    if (on == -1 && PyErr_Occurred()) return NULL;
    int old = sp_spmv_sequential;
    sp_spmv_sequential = on != 0;
    return PyBool_FromLong(old);
}

/* sp_weight.full: a bitmask weight whose rows are all dense (the mask was read when packing anyway). */
static int all_stored(const sp_weight *w) {
    if (w->delta || w->M == 0) return 0;
    const uint64_t *m = (const uint64_t *)w->mask;
    const uint64_t tail = w->K % 64 ? (1ULL << (w->K % 64)) - 1 : ~0ULL;
    for (int64_t r = 0; r < w->M; r++) {
        if (w->rowptr[r] != r * w->K) return 0;
        for (int64_t k = 0; k < w->KW; k++)
            if (m[r * w->KW + k] != (k + 1 < w->KW ? ~0ULL : tail)) return 0;
    }
    return 1;
}

static void free_weight(PyObject *capsule) { free(PyCapsule_GetPointer(capsule, CAPSULE)); }

static PyObject *py_pack(PyObject *self, PyObject *args) {
    (void)self;
    int fmt, delta;
    long long M, K, mask, vals, rowptr, scales, rowsum, bias;
    if (!PyArg_ParseTuple(args, "ipLLLLLLLL", &fmt, &delta, &M, &K, &mask, &vals, &rowptr, &scales, &rowsum,
                          &bias))
        return NULL;
    if (fmt < 0 || fmt >= FMT_COUNT || M < 0 || K < 0 || (M > 0 && (!mask || !vals || !rowptr)) ||
        (SP_FORMATS[fmt].has_scales != (scales != 0)) || (fmt == FMT_I8 && M > 0 && !rowsum) ||
        (fmt == FMT_I4 && delta)) {
        PyErr_SetString(PyExc_ValueError, "_kernels.pack: bad format, sizes, or missing scales / row sums");
        return NULL;
    }
    sp_weight *w = (sp_weight *)calloc(1, sizeof(sp_weight));
    if (!w) return PyErr_NoMemory();
    w->fmt = fmt;
    w->delta = delta;
    w->M = M; w->K = K; w->KW = (K + 63) / 64;
    w->mask = (const void *)(intptr_t)mask;
    w->vals = (const void *)(intptr_t)vals;
    w->rowptr = (const int64_t *)(intptr_t)rowptr;
    w->scales = (const float *)(intptr_t)scales;
    w->rowsum = (const int32_t *)(intptr_t)rowsum;
    w->bias = (const float *)(intptr_t)bias;
    w->full = all_stored(w);
    PyObject *cap = PyCapsule_New(w, CAPSULE, free_weight);
    if (!cap) free(w);
    return cap;
}

/* n integer arguments of a METH_FASTCALL call into out; 0, or -1 with the Python error set. */
static int int_args(PyObject *const *args, int n, long long *out) {
    for (int i = 0; i < n; i++) {
        out[i] = PyLong_AsLongLong(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static int clamp_threads(long long n) { return n < 1 ? 1 : n > 64 ? 64 : (int)n; }

/* METH_FASTCALL: decode calls this ~120 times per token, so no argument tuple is built. */
static PyObject *py_linear(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "_kernels.linear takes 11 arguments");
        return NULL;
    }
    const sp_weight *w = (const sp_weight *)PyCapsule_GetPointer(args[0], CAPSULE);
    if (!w) return NULL;
    long long v[8];
    if (int_args(args + 1, 8, v)) return NULL;
    const long long x = v[0], N = v[1], sr = v[2], sc = v[3], y = v[4];
    const int isa = (int)v[5], act = (int)v[7], nthreads = clamp_threads(v[6]);
    const double in_scale = PyFloat_AsDouble(args[9]);
    if (in_scale == -1.0 && PyErr_Occurred()) return NULL;
    const int raw_acc = PyObject_IsTrue(args[10]);
    if (raw_acc < 0) return NULL;
    int bad = isa < 0 || isa > sp_best_isa() || N < 0 || (N > 0 && w->M > 0 && (!x || !y)) || act < 0 || act > 1 || (raw_acc && !act);
    if (act) bad = bad || w->fmt != FMT_I8 || w->delta || w->K > W8A8_MAX_K || !(in_scale >= 0.0);
    if (bad) {
        PyErr_SetString(PyExc_ValueError,
                        "_kernels.linear: bad ISA, sizes or activation mode (int8 activations need int8 values, "
                        "bitmask index, K <= 65536)");
        return NULL;
    }
    if (w->M == 0 || N == 0) Py_RETURN_NONE;
    int rc;
    const float *xp = (const float *)(intptr_t)x;
    Py_BEGIN_ALLOW_THREADS
    if (act) rc = sp_run_w8a8(w, xp, N, sr, sc, (void *)(intptr_t)y, isa, nthreads, (float)in_scale, raw_acc);
    else rc = sp_run_fp(w, xp, N, sr, sc, (float *)(intptr_t)y, isa, nthreads);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_quantize_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "_kernels.quantize_rows takes 8 arguments");
        return NULL;
    }
    long long v[6];
    if (int_args(args, 6, v)) return NULL;
    const long long x = v[0], N = v[1], sr = v[2], K = v[3], q = v[4], xs = v[5];
    const long long isa = PyLong_AsLongLong(args[6]);
    const double in_scale = PyFloat_AsDouble(args[7]);
    if (PyErr_Occurred()) return NULL;
    if (isa < 0 || isa > sp_best_isa() || N < 0 || K < 0 || (N > 0 && (!x || !q || !xs)) || !(in_scale >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "_kernels.quantize_rows: bad ISA, sizes, addresses or scale");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    sp_quantize_rows((const float *)(intptr_t)x, N, sr, K, (int)isa, (float)in_scale, (int8_t *)(intptr_t)q,
                     (float *)(intptr_t)xs);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_weight_address(PyObject *self, PyObject *capsule) {
    (void)self;
    void *w = PyCapsule_GetPointer(capsule, CAPSULE);
    return w ? PyLong_FromVoidPtr(w) : NULL;
}

static PyObject *py_all_stored(PyObject *self, PyObject *capsule) {
    (void)self;
    const sp_weight *w = (const sp_weight *)PyCapsule_GetPointer(capsule, CAPSULE);
    return w ? PyBool_FromLong(w->full) : NULL;
}

/* ---- the native decode step (native_step.c) ---- */
static const char NATIVE[] = "sparseft.runtime.native_model";

static void free_native(PyObject *capsule) {
    ns_model *m = (ns_model *)PyCapsule_GetPointer(capsule, NATIVE);
    if (m) ns_free(m);
    free(m);
}

static PyObject *py_native_new(PyObject *self, PyObject *args) {
    (void)self;
    long long ints, nints, floats, nfloats;
    if (!PyArg_ParseTuple(args, "LLLL", &ints, &nints, &floats, &nfloats)) return NULL;
    ns_model *m = (ns_model *)calloc(1, sizeof(ns_model));
    if (!m) return PyErr_NoMemory();
    const char *err = ns_parse((const int64_t *)(intptr_t)ints, nints, (const double *)(intptr_t)floats, nfloats, m);
    if (err) {
        free(m);
        PyErr_Format(PyExc_ValueError, "_kernels.native_new: %s", err);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(m, NATIVE, free_native);
    if (!cap) {
        ns_free(m);
        free(m);
    }
    return cap;
}

static PyObject *py_native_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "_kernels.native_step takes 6 arguments");
        return NULL;
    }
    const ns_model *m = (const ns_model *)PyCapsule_GetPointer(args[0], NATIVE);
    if (!m) return NULL;
    long long v[5];
    if (int_args(args + 1, 5, v)) return NULL;
    const long long tok = v[0], pos = v[1], logits = v[2];
    const int isa = (int)v[3], nthreads = clamp_threads(v[4]);
    if (tok < 0 || tok >= m->V || pos < 0 || pos >= m->T || !logits || isa < 0 || isa > sp_best_isa()) {
        PyErr_SetString(PyExc_ValueError, "_kernels.native_step: token, position or ISA out of range");
        return NULL;
    }
    int64_t best;
    const int64_t token = tok;
    Py_BEGIN_ALLOW_THREADS
    best = ns_forward(m, &token, 1, pos, (float *)(intptr_t)logits, isa, nthreads);
    Py_END_ALLOW_THREADS
    if (best < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(best);
}

static PyObject *py_native_prompt(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "_kernels.native_prompt takes 7 arguments");
        return NULL;
    }
    const ns_model *m = (const ns_model *)PyCapsule_GetPointer(args[0], NATIVE);
    if (!m) return NULL;
    long long v[6];
    if (int_args(args + 1, 6, v)) return NULL;
    const long long toks = v[0], n = v[1], pos0 = v[2], logits = v[3];
    const int isa = (int)v[4], nthreads = clamp_threads(v[5]);
    const int64_t *t = (const int64_t *)(intptr_t)toks;
    int bad = !toks || n < 1 || pos0 < 0 || pos0 + n > m->T || !logits || isa < 0 || isa > sp_best_isa();
    for (long long i = 0; !bad && i < n; i++) bad = t[i] < 0 || t[i] >= m->V;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "_kernels.native_prompt: tokens, positions or ISA out of range");
        return NULL;
    }
    int64_t best;
    Py_BEGIN_ALLOW_THREADS
    best = ns_forward(m, t, n, pos0, (float *)(intptr_t)logits, isa, nthreads);
    Py_END_ALLOW_THREADS
    if (best < 0) return PyErr_NoMemory();
    return PyLong_FromLongLong(best);
}

static PyMethodDef methods[] = {
    {"best_isa", py_best_isa, METH_NOARGS, "best_isa() -> int: 2 = AVX-512, 1 = AVX2, 0 = portable C."},
    {"amx_available", py_amx_available, METH_NOARGS,
     "amx_available() -> bool: the CPU has AMX-TILE/BF16/INT8 and AVX512-BF16, and the OS granted the tiles."},
    {"formats", py_formats, METH_NOARGS,
     "formats() -> ((name, id, bits per value, has_scales), ...): the value formats the kernels know."},
    {"set_amx", py_set_amx, METH_VARARGS,
     "set_amx(fmt_id, min_batch): on the AVX-512 path, run this format's weights (bf16 / int8, bitmask index) "
     "on the AMX kernels from min_batch rows of x on (0: never)."},
    {"set_spmv_sequential", py_set_spmv_sequential, METH_O,
     "set_spmv_sequential(on) -> bool (the old setting): batch-1 int8 kernels read rows one after another "
     "(True) or in tiles of 4 rows side by side (False)."},
    {"pack", py_pack, METH_VARARGS,
     "pack(fmt_id, delta, M, K, mask, vals, rowptr, scales, rowsum, bias) -> handle: a weight's kernel "
     "arguments (addresses as ints, 0 = none; delta: mask is the uint8 gap index)."},
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_FASTCALL,
     "linear(handle, x, N, x_row_stride, x_col_stride, y, isa, nthreads, act, in_scale, raw_acc): "
     "y[N][M] = x W^T + b for fp32 x. act 0: fp32 activations; 1: int8 activations (in_scale 0: per token, "
     "> 0: static), y fp32, or with raw_acc the int32 [N][M] integer dot products."},
    {"quantize_rows", (PyCFunction)(void (*)(void))py_quantize_rows, METH_FASTCALL,
     "quantize_rows(x, N, x_row_stride, K, q, scales, isa, in_scale): int8 q [N][K] and fp32 scales [N] of "
     "N contiguous rows of fp32 x, rounded as the W8A8 kernels do (in_scale 0: per token, > 0: static)."},
    {"all_stored", py_all_stored, METH_O,
     "all_stored(handle) -> bool: every column of the weight is stored (its batch-1 kernels read no mask)."},
    {"weight_address", py_weight_address, METH_O,
     "weight_address(handle) -> int: the address of a packed weight, for a native_new description."},
    {"native_new", py_native_new, METH_VARARGS,
     "native_new(ints, n_ints, floats, n_floats) -> model: a Llama-family decoder for native_step from its "
     "description (int64 and float64 arrays by address; layout in native_step.h); ValueError if sizes disagree."},
    {"native_step", (PyCFunction)(void (*)(void))py_native_step, METH_FASTCALL,
     "native_step(model, token, position, logits, isa, nthreads) -> int: one decode step (keys / values into "
     "the model's cache, logits [V] fp32 to the address), returns the argmax token."},
    {"native_prompt", (PyCFunction)(void (*)(void))py_native_prompt, METH_FASTCALL,
     "native_prompt(model, tokens, n, position, logits, isa, nthreads) -> int: n prompt tokens (int64 at the "
     "address) from position on, their projections at batch n; the last one's logits and argmax, as native_step."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_kernels", "Sparse bitmask kernels (C).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    sp_avx2_init();
    sp_spmv_sequential = sp_default_sequential();
    return PyModule_Create(&moddef);
}
