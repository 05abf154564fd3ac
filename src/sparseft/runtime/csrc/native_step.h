/* The forward of a Llama-family decoder (Llama, Qwen2, Mistral, SmolLM2 ...) over a decode step's token or
 * a prompt's tokens in C: embedding
 * row, per block RMSNorm -> q/k/v -> rotary -> attention over the KV cache -> o -> residual -> RMSNorm
 * -> gate/up -> SiLU(gate) * up -> down -> residual, final RMSNorm, output projection, argmax. One call
 * per token replaces the ~120 Python-level kernel calls and the glue ops between them
 * (runtime/native_decode.py builds the description from an HF model and checks it fits).
 *
 * The math is HF's LlamaForCausalLM in fp32: rms(x) = x / sqrt(mean(x^2) + eps) * weight; rotary of the
 * "rotate half" layout with angle pos * inv_freq[i] (inv_freq from the model, so linear / llama3 / yarn
 * scaled frequencies come as they are), cos and sin times attention_scaling; softmax(q.k * scale) over
 * the positions [max(0, pos - window + 1), pos]; grouped KV heads (query head h reads KV head
 * h / (NH / NKV)). Projections are sparse weights (any format and activation mode the kernels run) or
 * dense fp32 matrices with an optional bias. */
#ifndef SPARSEFT_NATIVE_STEP_H
#define SPARSEFT_NATIVE_STEP_H
#include <stdint.h>
#include "sparse_common.h"

typedef struct {
    const sp_weight *sparse; /* a packed sparse weight, or NULL for a dense one */
    const float *dense;      /* dense: [M][K] fp32 row-major */
    const float *bias;       /* dense: [M] or NULL (sparse weights carry their own) */
    int64_t M, K;
    int act;                 /* sparse: 0 fp32 activations, 1 int8 (W8A8) */
    float in_scale;          /* W8A8: static input scale, 0 = per token */
} ns_proj;

/* A block's input projections may be fused (one weight for q|k|v, one for gate|up) or separate: each
 * part writes its rows at the next offset of the block's buffer. */
#define NS_MAX_PARTS 3
typedef struct {
    const float *ln1, *ln2;  /* [H] RMSNorm weights before attention and before the MLP */
    ns_proj qkv[NS_MAX_PARTS], gate_up[NS_MAX_PARTS], o, down;
    int nqkv, ngate_up;
} ns_block;

typedef struct {
    int64_t L, H, NH, NKV, D, I, V, T; /* blocks, hidden, query / KV heads, head dim, MLP width, vocab, cache positions */
    int64_t window;                    /* sliding-window attention length, 0 = none */
    float eps, scale, rope_scaling;    /* RMSNorm epsilon, softmax scale, rotary attention_scaling */
    const float *embed;                /* [V][H] */
    const float *norm;                 /* [H] final RMSNorm */
    const float *inv_freq;             /* [D / 2] */
    float *kcache, *vcache;            /* [L][NKV][T][D], keys after rotary */
    ns_proj head;                      /* [V][H] output projection */
    ns_block *blocks;                  /* [L] */
} ns_model;

/* The description of a model as two flat arrays (runtime/native_decode.py writes them; addresses as
 * int64, 0 = none). ints: L H NH NKV D I V T window embed norm inv_freq kcache vcache, then the head's
 * projection, then per block: ln1 ln2 nqkv ngate_up, NS_MAX_PARTS q/k/v projections, NS_MAX_PARTS
 * gate/up projections, o, down (unused parts zero). A projection: sparse (an sp_weight address) dense
 * bias M K act. floats: eps scale rope_scaling, then each projection's in_scale in the same order.
 * Fills `m` (its blocks malloc'ed: free with ns_free) and returns NULL, or a message saying which size
 * does not fit. */
const char *ns_parse(const int64_t *ints, int64_t nints, const double *floats, int64_t nfloats, ns_model *m);
void ns_free(ns_model *m);

/* Runs tokens toks[0 .. n-1] at positions pos0 .. pos0 + n - 1 (< T; n = 1: a decode step, n > 1: a
 * prompt, its projections at batch n): writes their keys / values into the cache, the last token's logits
 * to `logits` ([V]) and returns their argmax (the first maximal index), or -1 when out of memory. */
int64_t ns_forward(const ns_model *m, const int64_t *toks, int64_t n, int64_t pos0, float *logits, int isa,
                   int nthreads);

#endif
