/* The forward of a Llama-family or Whisper decoder over n tokens (a decode step: n = 1; a prompt: n > 1),
 * see native_step.h for the math it follows. The projections run on the sparse kernels at batch n (sp_run_fp /
 * sp_run_w8a8, threaded by the pool) or on the dense fp32 GEMV below; everything between them is a few
 * thousand flops per block and token, done on the caller. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "native_step.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx512vnni,popcnt,bmi,bmi2,fma")))
#include "avx512_reduce.h"
#endif

/* ---- dense fp32 GEMV, rows split across the pool in chunks of DENSE_CHUNK ---- */
#define DENSE_CHUNK 64

typedef struct {
    const ns_proj *p;
    const float *x; /* [n][K] */
    float *y;       /* [n][M] */
    int64_t n;
    int isa;
    atomic_llong next;
} dense_task;

static void dense_rows_portable(const ns_proj *p, const float *x, float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const float *w = p->dense + r * p->K;
        float acc = 0.f;
        for (int64_t k = 0; k < p->K; k++) acc += w[k] * x[k];
        y[r] = acc;
    }
}

#if defined(__x86_64__)
/* 4 rows at a time, 16 columns per FMA; a masked load covers K % 16. Software prefetch into L2 as the
 * dense-row sparse kernels (SP_FULL_PF): GPT-2's one-token fp32 forward (Zen 5, 1 thread, 2 A/B builds) at 0%,
 * 494 MB of fp32 weights, 29.7-30.5 -> 24.1-26.0 ms; at 90%, where the 154 MB fp32 head is most of it,
 * 15.6 -> 13.0-13.3 ms. */
static T512 void dense_rows_avx512(const ns_proj *p, const float *x, float *y, int64_t r0, int64_t r1) {
    const int64_t K = p->K, K16 = K & ~15;
    const __mmask16 tail = (__mmask16)((1u << (K - K16)) - 1);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = p->dense + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < K16; k += 16) {
            SP_FULL_PF(w0 + k); /* one line of each row per step: the L2 prefetches of the dense-row kernels */
            SP_FULL_PF(w1 + k);
            SP_FULL_PF(w2 + k);
            SP_FULL_PF(w3 + k);
            __m512 xv = _mm512_loadu_ps(x + k);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xv, a3);
        }
        if (tail) {
            __m512 xv = _mm512_maskz_loadu_ps(tail, x + K16);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + K16), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + K16), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w2 + K16), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w3 + K16), xv, a3);
        }
        _mm_storeu_ps(y + r, reduce4_ps(a0, a1, a2, a3));
    }
    dense_rows_portable(p, x, y, r, r1);
}
#endif

static void dense_run(void *arg, int t, int nt) {
    dense_task *tk = (dense_task *)arg;
    (void)t;
    (void)nt;
    const int64_t M = tk->p->M;
    for (;;) {
        int64_t r0 = atomic_fetch_add_explicit(&tk->next, DENSE_CHUNK, memory_order_relaxed);
        if (r0 >= M) break;
        int64_t r1 = r0 + DENSE_CHUNK < M ? r0 + DENSE_CHUNK : M;
        /* token after token over the same chunk of rows: its weights stay in cache */
        for (int64_t t = 0; t < tk->n; t++) {
            const float *x = tk->x + t * tk->p->K;
            float *y = tk->y + t * M;
#if defined(__x86_64__)
            if (tk->isa == ISA_AVX512) {
                dense_rows_avx512(tk->p, x, y, r0, r1);
                continue;
            }
#endif
            dense_rows_portable(tk->p, x, y, r0, r1);
        }
    }
}

/* y[n][M] = x[n][K] W^T (+ bias): 0, or -1 when the sparse kernels ran out of memory. */
static int proj_run(const ns_proj *p, const float *x, int64_t n, float *y, int isa, int nthreads) {
    if (p->sparse) {
        if (p->act) return sp_run_w8a8(p->sparse, x, n, p->K, 1, y, isa, nthreads, p->in_scale, 0);
        return sp_run_fp(p->sparse, x, n, p->K, 1, y, isa, nthreads);
    }
    dense_task tk = {p, x, y, n, isa, 0};
    int chunks = (int)((p->M + DENSE_CHUNK - 1) / DENSE_CHUNK);
    pool_run(dense_run, &tk, nthreads < chunks ? nthreads : chunks);
    if (p->bias)
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < p->M; r++) y[t * p->M + r] += p->bias[r];
    return 0;
}

/* Parts side by side in each token's row of y ([n][sum of the parts' M]); with several tokens a part's
 * [n][M] output goes through `tmp` first. */
static int parts_run(const ns_proj *parts, int np, const float *x, int64_t n, float *y, float *tmp, int isa,
                     int nthreads) {
    int64_t width = 0, at = 0;
    for (int i = 0; i < np; i++) width += parts[i].M;
    if (np == 1) return proj_run(&parts[0], x, n, y, isa, nthreads);
    for (int i = 0; i < np; i++) {
        const int64_t M = parts[i].M;
        if (proj_run(&parts[i], x, n, n == 1 ? y + at : tmp, isa, nthreads)) return -1;
        if (n > 1)
            for (int64_t t = 0; t < n; t++) memcpy(y + t * width + at, tmp + t * M, sizeof(float) * (size_t)M);
        at += M;
    }
    return 0;
}

/* ---- the glue: norms, rotary, attention, SiLU / GELU ---- */
static void rms_norm(const float *x, const float *w, int64_t H, float eps, float *out) {
    float ss = 0.f;
    for (int64_t i = 0; i < H; i++) ss += x[i] * x[i];
    float inv = 1.f / sqrtf(ss / (float)H + eps);
    for (int64_t i = 0; i < H; i++) out[i] = w[i] * (x[i] * inv);
}

static void layer_norm(const float *x, const float *w, const float *b, int64_t H, float eps, float *out) {
    float mean = 0.f, var = 0.f;
    for (int64_t i = 0; i < H; i++) mean += x[i];
    mean /= (float)H;
    for (int64_t i = 0; i < H; i++) var += (x[i] - mean) * (x[i] - mean);
    float inv = 1.f / sqrtf(var / (float)H + eps);
    for (int64_t i = 0; i < H; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

/* The model's norm of each of n rows of x ([n][H]) into out. */
static void norm_rows(const ns_model *m, const float *x, const float *w, const float *b, int64_t n, float *out) {
    for (int64_t t = 0; t < n; t++) {
        if (m->layer_norm) layer_norm(x + t * m->H, w, b, m->H, m->eps, out + t * m->H);
        else rms_norm(x + t * m->H, w, m->H, m->eps, out + t * m->H);
    }
}

/* In place on `heads` vectors of D: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), halves of D. */
static void rotary(float *v, int64_t heads, int64_t D, const float *cs, const float *sn) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; h++, v += D)
        for (int64_t i = 0; i < half; i++) {
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cs[i] - x2 * sn[i];
            v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
}

static float dot(const float *a, const float *b, int64_t n) {
    float s = 0.f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* The keys and values one query attends to: heads of T rows of D (a layer's part of a cache), KV heads of
 * NKV (query head h reads KV head h / (NH / NKV)), rows first .. last. */
typedef struct {
    const float *K, *V;
    int64_t T, NH, NKV, D, first, last;
    float scale;
} ns_span;

/* out[NH][D]: softmax(q . K[j] * scale) weighted V rows j in [first, last] of each query head's KV head. */
static void attention(const ns_span *a, const float *q, float *probs, float *out) {
    const int64_t D = a->D, group = a->NH / a->NKV;
    for (int64_t h = 0; h < a->NH; h++) {
        const int64_t kv = h / group;
        const float *K = a->K + kv * a->T * D, *V = a->V + kv * a->T * D, *qh = q + h * D;
        float mx = -INFINITY, sum = 0.f;
        for (int64_t j = a->first; j <= a->last; j++) {
            probs[j] = dot(qh, K + j * D, D) * a->scale;
            if (probs[j] > mx) mx = probs[j];
        }
        for (int64_t j = a->first; j <= a->last; j++) sum += (probs[j] = expf(probs[j] - mx));
        float *o = out + h * D, inv = 1.f / sum;
        memset(o, 0, sizeof(float) * (size_t)D);
        for (int64_t j = a->first; j <= a->last; j++) {
            const float p = probs[j] * inv, *v = V + j * D;
            for (int64_t d = 0; d < D; d++) o[d] += p * v[d];
        }
    }
}

#if defined(__x86_64__)
/* e^x for 16 floats: x = n ln2 + r (n = round(x log2 e), ln2 in two parts), e^r by its degree-6 Taylor
 * polynomial (|r| <= ln2 / 2: truncation < 1.2e-7 relative, about libm's expf), times 2^n by vscalefps
 * (which also gives 0 / inf past the float range). Replaces ~50k scalar expf per SmolLM2 token (SiLU and
 * softmax). */
static inline __attribute__((always_inline)) T512 __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.8f)), _mm512_set1_ps(-104.f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.f / 720.f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

/* p[j] = e^(p[j] - mx) for j in [first, last]; returns their sum. */
static T512 float exp_shifted_avx512(float *p, int64_t first, int64_t last, float mx) {
    __m512 sum = _mm512_setzero_ps();
    const __m512 m = _mm512_set1_ps(mx);
    for (int64_t j = first; j <= last; j += 16) {
        const __mmask16 k = last - j >= 15 ? (__mmask16)0xFFFF : (__mmask16)((1u << (last - j + 1)) - 1);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + j), m));
        _mm512_mask_storeu_ps(p + j, k, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(sum);
}

/* out[i] = SiLU(g[i]) * u[i] = g / (1 + e^-g) * u, i < n. */
static T512 void silu_mul_avx512(const float *g, const float *u, int64_t n, float *out) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 gv = _mm512_maskz_loadu_ps(k, g + i);
        const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_div_ps(gv, d), _mm512_maskz_loadu_ps(k, u + i)));
    }
}

/* GPT-2's tanh GELU in place: x / 2 * (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2 / pi) (x + 0.044715 x^3). */
static T512 void gelu_tanh_avx512(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        const __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(-2.f * 0.7978845608028654f),
                                        _mm512_fmadd_ps(cube, _mm512_set1_ps(0.044715f), v));
        const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), exp512(u2));
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(v, d));
    }
}

#define NS_MAX_GROUP 16
#define NS_MAX_DV 16 /* head dim up to 256 */
/* AVX-512 attention for head dims that are multiples of 16: per KV head, each cached key and value row
 * is loaded once for all the query heads that share it; probs holds group x (last + 1) scores. */
static T512 void attention_avx512(const ns_span *a, const float *q, float *probs, float *out) {
    const int64_t D = a->D, group = a->NH / a->NKV, nv = D / 16, span = a->last + 1, first = a->first,
                  pos = a->last;
    for (int64_t kv = 0; kv < a->NKV; kv++) {
        const float *K = a->K + kv * a->T * D, *V = a->V + kv * a->T * D;
        __m512 qv[NS_MAX_GROUP][NS_MAX_DV];
        for (int64_t g = 0; g < group; g++)
            for (int64_t i = 0; i < nv; i++) qv[g][i] = _mm512_loadu_ps(q + (kv * group + g) * D + 16 * i);
        for (int64_t j = first; j <= pos; j++) {
            __m512 kr[NS_MAX_DV];
            for (int64_t i = 0; i < nv; i++) kr[i] = _mm512_loadu_ps(K + j * D + 16 * i);
            for (int64_t g = 0; g < group; g++) {
                __m512 acc = _mm512_mul_ps(qv[g][0], kr[0]);
                for (int64_t i = 1; i < nv; i++) acc = _mm512_fmadd_ps(qv[g][i], kr[i], acc);
                probs[g * span + j] = _mm512_reduce_add_ps(acc) * a->scale;
            }
        }
        for (int64_t g = 0; g < group; g++) {
            float *p = probs + g * span, mx = -INFINITY;
            for (int64_t j = first; j <= pos; j++) mx = p[j] > mx ? p[j] : mx;
            const float inv = 1.f / exp_shifted_avx512(p, first, pos, mx);
            for (int64_t j = first; j <= pos; j++) p[j] *= inv;
        }
        __m512 acc[NS_MAX_GROUP][NS_MAX_DV];
        for (int64_t g = 0; g < group; g++)
            for (int64_t i = 0; i < nv; i++) acc[g][i] = _mm512_setzero_ps();
        for (int64_t j = first; j <= pos; j++)
            for (int64_t i = 0; i < nv; i++) {
                const __m512 vr = _mm512_loadu_ps(V + j * D + 16 * i);
                for (int64_t g = 0; g < group; g++)
                    acc[g][i] = _mm512_fmadd_ps(_mm512_set1_ps(probs[g * span + j]), vr, acc[g][i]);
            }
        for (int64_t g = 0; g < group; g++)
            for (int64_t i = 0; i < nv; i++) _mm512_storeu_ps(out + (kv * group + g) * D + 16 * i, acc[g][i]);
    }
}
#endif

static inline float silu(float x) { return x / (1.f + expf(-x)); }

/* GELU, mode 1 the exact form HF's "gelu" computes: x / 2 * (1 + erf(x / sqrt 2)); mode 2 the tanh form of
 * GPT-2's "gelu_new": x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))). */
static void gelu_inplace(float *x, int64_t n, int64_t mode, int isa) {
    if (mode == 2) {
#if defined(__x86_64__)
        if (isa == ISA_AVX512) {
            gelu_tanh_avx512(x, n);
            return;
        }
#endif
        for (int64_t i = 0; i < n; i++)
            x[i] = 0.5f * x[i] * (1.f + tanhf(0.7978845608028654f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
        return;
    }
    (void)isa;
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
}

static void attend(const ns_span *a, const float *q, float *probs, float *out, int isa) {
#if defined(__x86_64__)
    if (isa == ISA_AVX512 && a->D % 16 == 0 && a->D / 16 <= NS_MAX_DV && a->NH / a->NKV <= NS_MAX_GROUP) {
        attention_avx512(a, q, probs, out);
        return;
    }
#endif
    (void)isa;
    attention(a, q, probs, out);
}

/* Scratch of one forward over n tokens, as offsets into one allocation (floats). */
typedef struct {
    float *x, *cs, *sn, *h, *qkv, *att, *gu, *tmp, *probs;
} ns_scratch;

/* Width of a block's MLP input projection(s): gate | up, or fc1. */
static int64_t mlp_width(const ns_model *m) { return m->gelu ? m->I : 2 * m->I; }

static float *scratch_new(const ns_model *m, int64_t n, ns_scratch *s) {
    const int64_t H = m->H, half = m->D / 2, qkv = (m->NH + 2 * m->NKV) * m->D, gu = mlp_width(m);
    const int64_t part = qkv > gu ? qkv : gu; /* tmp: the widest part of unfused projections */
    const int64_t span = m->S > m->T ? m->S : m->T;
    const int64_t widths[] = {n * H, n * half, n * half, n * H, n * qkv, n * m->NH * m->D, n * gu, n * part,
                              m->NH * span};
    float **slots[] = {&s->x, &s->cs, &s->sn, &s->h, &s->qkv, &s->att, &s->gu, &s->tmp, &s->probs};
    int64_t total = 0;
    for (int i = 0; i < 9; i++) total += widths[i];
    float *mem = (float *)malloc(sizeof(float) * (size_t)total);
    if (!mem) return NULL;
    for (int64_t i = 0, at = 0; i < 9; at += widths[i], i++) *slots[i] = mem + at;
    return mem;
}

static void add_rows(float *x, const float *h, int64_t count) {
    for (int64_t i = 0; i < count; i++) x[i] += h[i];
}

/* Self-attention of block l (x: [n][H] residual stream, updated). All n keys / values enter the cache
 * first; token t then attends to positions <= pos0 + t (causal). */
static int self_attention(const ns_model *m, int64_t l, int64_t pos0, int64_t n, const ns_scratch *s, int isa,
                          int nthreads) {
    const ns_block *b = &m->blocks[l];
    const int64_t H = m->H, D = m->D, half = D / 2, qn = m->NH * D, kvn = m->NKV * D, W = qn + 2 * kvn;
    norm_rows(m, s->x, b->ln1, b->ln1b, n, s->h);
    if (parts_run(b->qkv, b->nqkv, s->h, n, s->qkv, s->tmp, isa, nthreads)) return -1;
    float *kl = m->kcache + l * m->NKV * m->T * D, *vl = m->vcache + l * m->NKV * m->T * D;
    for (int64_t t = 0; t < n; t++) {
        float *q = s->qkv + t * W;
        if (m->inv_freq) {
            rotary(q, m->NH, D, s->cs + t * half, s->sn + t * half);
            rotary(q + qn, m->NKV, D, s->cs + t * half, s->sn + t * half);
        }
        for (int64_t kv = 0; kv < m->NKV; kv++) {
            const int64_t at = (kv * m->T + pos0 + t) * D;
            memcpy(kl + at, q + qn + kv * D, sizeof(float) * (size_t)D);
            memcpy(vl + at, q + qn + kvn + kv * D, sizeof(float) * (size_t)D);
        }
    }
    for (int64_t t = 0; t < n; t++) {
        const int64_t pos = pos0 + t, first = m->window > 0 && pos - m->window + 1 > 0 ? pos - m->window + 1 : 0;
        const ns_span a = {kl, vl, m->T, m->NH, m->NKV, D, first, pos, m->scale};
        attend(&a, s->qkv + t * W, s->probs, s->att + t * qn, isa);
    }
    if (proj_run(&b->o, s->att, n, s->h, isa, nthreads)) return -1;
    add_rows(s->x, s->h, n * H);
    return 0;
}

/* Cross-attention of block l over the S encoder positions of the cross cache. */
static int cross_attention(const ns_model *m, int64_t l, int64_t n, const ns_scratch *s, int isa, int nthreads) {
    const ns_block *b = &m->blocks[l];
    const int64_t D = m->D, qn = m->NH * D, at = l * m->NH * m->S * D;
    norm_rows(m, s->x, b->lnx, b->lnxb, n, s->h);
    if (proj_run(&b->xq, s->h, n, s->qkv, isa, nthreads)) return -1;
    const ns_span a = {m->xk + at, m->xv + at, m->S, m->NH, m->NH, D, 0, m->S - 1, m->scale};
    for (int64_t t = 0; t < n; t++) attend(&a, s->qkv + t * qn, s->probs, s->att + t * qn, isa);
    if (proj_run(&b->xo, s->att, n, s->h, isa, nthreads)) return -1;
    add_rows(s->x, s->h, n * m->H);
    return 0;
}

static int mlp(const ns_model *m, int64_t l, int64_t n, const ns_scratch *s, int isa, int nthreads) {
    const ns_block *b = &m->blocks[l];
    norm_rows(m, s->x, b->ln2, b->ln2b, n, s->h);
    if (parts_run(b->gate_up, b->ngate_up, s->h, n, s->gu, s->tmp, isa, nthreads)) return -1;
    if (m->gelu) {
        gelu_inplace(s->gu, n * m->I, m->gelu, isa);
    } else {
        for (int64_t t = 0; t < n; t++) {
            float *g = s->gu + t * 2 * m->I, *a = s->gu + t * m->I; /* SiLU(gate) * up, packed to [n][I] */
#if defined(__x86_64__)
            if (isa == ISA_AVX512) {
                silu_mul_avx512(g, g + m->I, m->I, a); /* a may start at g: each vector is read before written */
                continue;
            }
#endif
            for (int64_t i = 0; i < m->I; i++) a[i] = silu(g[i]) * g[m->I + i];
        }
    }
    if (proj_run(&b->down, s->gu, n, s->h, isa, nthreads)) return -1;
    add_rows(s->x, s->h, n * m->H);
    return 0;
}

/* Token embeddings (times embed_scale) plus learned position rows, or the rotary angles. */
static void embed_tokens(const ns_model *m, const int64_t *toks, int64_t n, int64_t pos0, const ns_scratch *s) {
    const int64_t H = m->H, half = m->D / 2;
    for (int64_t t = 0; t < n; t++) {
        float *x = s->x + t * H;
        const float *e = m->embed + toks[t] * H;
        for (int64_t i = 0; i < H; i++) x[i] = e[i] * m->embed_scale;
        if (m->pos_embed) {
            add_rows(x, m->pos_embed + (pos0 + t) * H, H);
            continue;
        }
        for (int64_t i = 0; i < half; i++) {
            const float angle = (float)(pos0 + t) * m->inv_freq[i];
            s->cs[t * half + i] = cosf(angle) * m->rope_scaling;
            s->sn[t * half + i] = sinf(angle) * m->rope_scaling;
        }
    }
}

int64_t ns_forward(const ns_model *m, const int64_t *toks, int64_t n, int64_t pos0, float *logits, int isa,
                   int nthreads) {
    ns_scratch s;
    float *mem = scratch_new(m, n, &s);
    if (!mem) return -1;
    embed_tokens(m, toks, n, pos0, &s);
    int64_t best = -1;
    for (int64_t l = 0; l < m->L; l++) {
        if (self_attention(m, l, pos0, n, &s, isa, nthreads)) goto done;
        if (m->S && cross_attention(m, l, n, &s, isa, nthreads)) goto done;
        if (mlp(m, l, n, &s, isa, nthreads)) goto done;
    }
    norm_rows(m, s.x + (n - 1) * m->H, m->norm, m->norm_bias, 1, s.h); /* logits of the last token only */
    if (proj_run(&m->head, s.h, 1, logits, isa, nthreads)) goto done;
    best = 0;
    for (int64_t v = 1; v < m->V; v++)
        if (logits[v] > logits[best]) best = v;
done:
    free(mem);
    return best;
}

/* ---- the description (see ns_parse in native_step.h) ---- */
typedef struct {
    const int64_t *ints;
    const double *floats;
    int64_t ni, nf, i, f;
} reader;

static int64_t next_int(reader *rd) { return rd->i < rd->ni ? rd->ints[rd->i++] : (rd->i++, 0); }
static double next_float(reader *rd) { return rd->f < rd->nf ? rd->floats[rd->f++] : (rd->f++, 0.0); }

static void read_proj(reader *rd, ns_proj *p) {
    p->sparse = (const sp_weight *)(intptr_t)next_int(rd);
    p->dense = (const float *)(intptr_t)next_int(rd);
    p->bias = (const float *)(intptr_t)next_int(rd);
    p->M = next_int(rd);
    p->K = next_int(rd);
    p->act = (int)next_int(rd);
}

/* A projection of M x K: exactly one of sparse / dense, the packed weight's sizes agreeing. */
static int proj_ok(const ns_proj *p, int64_t M, int64_t K) {
    if (p->M != M || p->K != K || !p->sparse == !p->dense || p->act < 0 || p->act > 1) return 0;
    if (p->sparse) return p->sparse->M == M && p->sparse->K == K && (!p->act || p->sparse->fmt == FMT_I8);
    return 1;
}

static int parts_ok(const ns_proj *parts, int n, int64_t M, int64_t K) {
    int64_t total = 0;
    if (n < 1 || n > NS_MAX_PARTS) return 0;
    for (int i = 0; i < n; i++) {
        if (!proj_ok(&parts[i], parts[i].M, K) || parts[i].M <= 0) return 0;
        total += parts[i].M;
    }
    return total == M;
}

static const float *next_addr(reader *rd) { return (const float *)(intptr_t)next_int(rd); }

/* Sizes and addresses of the model header; NULL or what is wrong. */
static const char *parse_header(reader *rd, ns_model *m) {
    int64_t *dims[] = {&m->L, &m->H, &m->NH, &m->NKV, &m->D, &m->I, &m->V, &m->T, &m->window, &m->layer_norm,
                       &m->gelu, &m->S};
    for (int i = 0; i < 12; i++) *dims[i] = next_int(rd);
    m->embed = next_addr(rd);
    m->norm = next_addr(rd);
    m->norm_bias = next_addr(rd);
    m->inv_freq = next_addr(rd);
    m->pos_embed = next_addr(rd);
    m->kcache = (float *)(intptr_t)next_int(rd);
    m->vcache = (float *)(intptr_t)next_int(rd);
    m->xk = next_addr(rd);
    m->xv = next_addr(rd);
    if (m->L < 1 || m->H < 1 || m->NH < 1 || m->NKV < 1 || m->NH % m->NKV || m->D < 2 || m->D % 2 || m->I < 1 ||
        m->V < 1 || m->T < 1 || m->window < 0 || m->S < 0 || m->layer_norm & ~1LL || m->gelu < 0 ||
        m->gelu > 2)
        return "bad sizes (blocks, hidden, heads, KV heads dividing heads, even head dim, MLP, vocab, cache)";
    if (!m->embed || !m->norm || !m->kcache || !m->vcache || !m->inv_freq == !m->pos_embed ||
        (m->layer_norm && !m->norm_bias) || (m->S && (!m->xk || !m->xv)))
        return "a missing tensor address (or both rotary frequencies and learned positions)";
    m->eps = (float)next_float(rd);
    m->scale = (float)next_float(rd);
    m->rope_scaling = (float)next_float(rd);
    m->embed_scale = (float)next_float(rd);
    return NULL;
}

/* Block b's norms and projections; NULL or what is wrong. */
static const char *parse_block(reader *rd, const ns_model *m, ns_block *b) {
    const float **norms[] = {&b->ln1, &b->ln2, &b->ln1b, &b->ln2b, &b->lnx, &b->lnxb};
    for (int i = 0; i < 6; i++) *norms[i] = next_addr(rd);
    b->nqkv = (int)next_int(rd);
    b->ngate_up = (int)next_int(rd);
    ns_proj *all[2 * NS_MAX_PARTS + 4];
    for (int i = 0; i < NS_MAX_PARTS; i++) all[i] = &b->qkv[i], all[NS_MAX_PARTS + i] = &b->gate_up[i];
    all[2 * NS_MAX_PARTS] = &b->o;
    all[2 * NS_MAX_PARTS + 1] = &b->down;
    all[2 * NS_MAX_PARTS + 2] = &b->xq;
    all[2 * NS_MAX_PARTS + 3] = &b->xo;
    for (int i = 0; i < 2 * NS_MAX_PARTS + 4; i++) read_proj(rd, all[i]);
    for (int i = 0; i < 2 * NS_MAX_PARTS + 4; i++) all[i]->in_scale = (float)next_float(rd);
    const int64_t qkv = (m->NH + 2 * m->NKV) * m->D, qn = m->NH * m->D;
    if (!b->ln1 || !b->ln2 || (m->layer_norm && (!b->ln1b || !b->ln2b)))
        return "a block's norm weights are missing";
    if (m->S && (!b->lnx || (m->layer_norm && !b->lnxb) || !proj_ok(&b->xq, qn, m->H) || !proj_ok(&b->xo, m->H, qn)))
        return "a block's cross-attention norm or projections are missing or of the wrong size";
    if (!parts_ok(b->qkv, b->nqkv, qkv, m->H)) return "a block's q/k/v rows do not add up";
    if (!parts_ok(b->gate_up, b->ngate_up, mlp_width(m), m->H)) return "a block's gate/up (fc1) rows do not add up";
    if (!proj_ok(&b->o, m->H, qn)) return "a block's o projection has the wrong size";
    if (!proj_ok(&b->down, m->H, m->I)) return "a block's down (fc2) projection has the wrong size";
    return NULL;
}

const char *ns_parse(const int64_t *ints, int64_t nints, const double *floats, int64_t nfloats, ns_model *m) {
    reader rd = {ints, floats, nints, nfloats, 0, 0};
    memset(m, 0, sizeof(*m));
    const char *err = parse_header(&rd, m);
    if (err) return err;
    read_proj(&rd, &m->head);
    m->head.in_scale = (float)next_float(&rd);
    if (!proj_ok(&m->head, m->V, m->H)) return "the output projection is not vocab x hidden";
    m->blocks = (ns_block *)calloc((size_t)m->L, sizeof(ns_block));
    if (!m->blocks) return "out of memory";
    for (int64_t l = 0; l < m->L && !err; l++) err = parse_block(&rd, m, &m->blocks[l]);
    if (!err && (rd.i != nints || rd.f != nfloats)) err = "the description's length does not match its sizes";
    if (err) ns_free(m);
    return err;
}

void ns_free(ns_model *m) {
    free(m->blocks);
    m->blocks = NULL;
}
