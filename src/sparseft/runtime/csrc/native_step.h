/* The forward of a pre-norm decoder over a decode step's token or a prompt's tokens in C, for three families
 * that differ only in a few switches of the model description:
 *
 * - Llama-family (Llama, Qwen2, Mistral, SmolLM2 ...): embedding row, per block RMSNorm -> q/k/v -> rotary
 *   -> attention over the KV cache -> o -> residual -> RMSNorm -> gate/up -> SiLU(gate) * up -> down ->
 *   residual, final RMSNorm, output projection, argmax;
 * - GPT-2: as Whisper's decoder without cross-attention (learned positions, LayerNorm, fused q|k|v with
 *   biases, tanh GELU), the output projection the tied embedding;
 * - Whisper's decoder: embedding row + learned position row, per block LayerNorm -> q/k/v -> attention
 *   over the KV cache -> o -> residual -> LayerNorm -> cross q -> attention over the encoder's keys /
 *   values (computed once per clip by the caller into the cross cache) -> cross o -> residual ->
 *   LayerNorm -> fc1 -> GELU -> fc2 -> residual, final LayerNorm, output projection, argmax.
 *
 * One call per token replaces the ~120 Python-level kernel calls and the glue ops between them
 * (runtime/native_decode.py builds the description from an HF model and checks it fits).
 *
 * The math is HF's in fp32: rms(x) = x / sqrt(mean(x^2) + eps) * weight; LayerNorm (x - mean) /
 * sqrt(var + eps) * weight + bias; rotary of the "rotate half" layout with angle pos * inv_freq[i]
 * (inv_freq from the model, so linear / llama3 / yarn scaled frequencies come as they are), cos and sin
 * times attention_scaling; softmax(q.k * scale) over the positions [max(0, pos - window + 1), pos];
 * grouped KV heads (query head h reads KV head h / (NH / NKV)); GELU the exact erf form or GPT-2's tanh form. Projections are
 * sparse weights (any format and activation mode the kernels run) or dense fp32 matrices with an
 * optional bias. */
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
    const float *ln1, *ln2;    /* [H] norm weights before attention and before the MLP */
    const float *ln1b, *ln2b;  /* LayerNorm biases (layer_norm models) */
    const float *lnx, *lnxb;   /* cross-attention models: the norm before cross-attention */
    ns_proj qkv[NS_MAX_PARTS], gate_up[NS_MAX_PARTS], o, down;
    ns_proj xq, xo;            /* cross-attention query and output projections */
    int nqkv, ngate_up;        /* gate_up: gate | up (gated SiLU), or fc1 (GELU) */
} ns_block;

typedef struct {
    int64_t L, H, NH, NKV, D, I, V, T; /* blocks, hidden, query / KV heads, head dim, MLP width, vocab, cache positions */
    int64_t window;                    /* sliding-window attention length, 0 = none */
    int64_t layer_norm;                /* 1: LayerNorm with biases (Whisper), 0: RMSNorm (Llama) */
    int64_t gelu;                      /* fc1 -> GELU -> fc2 MLP: 1 exact (Whisper), 2 tanh (GPT-2); 0: gated SiLU (Llama) */
    int64_t S;                         /* cross-attention positions (encoder frames), 0 = no cross-attention */
    float eps, scale, rope_scaling;    /* norm epsilon, softmax scale, rotary attention_scaling */
    float embed_scale;                 /* token embedding multiplier (1 unless the model scales it) */
    const float *embed;                /* [V][H] */
    const float *norm, *norm_bias;     /* [H] final norm (bias: layer_norm models) */
    const float *inv_freq;             /* [D / 2] rotary frequencies, or NULL with learned positions */
    const float *pos_embed;            /* [T][H] learned position rows, or NULL (rotary) */
    float *kcache, *vcache;            /* [L][NKV][T][D], keys after rotary */
    const float *xk, *xv;              /* [L][NH][S][D] cross-attention keys / values (the caller's) */
    ns_proj head;                      /* [V][H] output projection */
    ns_block *blocks;                  /* [L] */
} ns_model;

/* The description of a model as two flat arrays (runtime/native_decode.py writes them; addresses as
 * int64, 0 = none). ints: L H NH NKV D I V T window layer_norm gelu S, embed norm norm_bias inv_freq
 * pos_embed kcache vcache xk xv, then the head's projection, then per block: ln1 ln2 ln1b ln2b lnx lnxb
 * nqkv ngate_up, NS_MAX_PARTS q/k/v projections, NS_MAX_PARTS gate/up projections, o, down, xq, xo (unused
 * parts zero). A projection: sparse (an sp_weight address) dense bias M K act. floats: eps scale
 * rope_scaling embed_scale, the head's in_scale, then each block's projections' in_scale in the same
 * order. Fills `m` (its blocks malloc'ed: free with ns_free) and returns NULL, or a message saying which
 * size does not fit. */
const char *ns_parse(const int64_t *ints, int64_t nints, const double *floats, int64_t nfloats, ns_model *m);
void ns_free(ns_model *m);

/* Runs tokens toks[0 .. n-1] at positions pos0 .. pos0 + n - 1 (< T; n = 1: a decode step, n > 1: a
 * prompt, its projections at batch n): writes their keys / values into the cache, the last token's logits
 * to `logits` ([V]) and returns their argmax (the first maximal index), or -1 when out of memory. */
int64_t ns_forward(const ns_model *m, const int64_t *toks, int64_t n, int64_t pos0, float *logits, int isa,
                   int nthreads);

#endif
