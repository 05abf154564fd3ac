#!/bin/bash
# The session-11 speed models: the session-9 W8A8 models (benchmarks/session9_models.sh, run it first)
# with their lm_head quantized to int4 by GPTQ in the quantize stage (magnitude-pruned: speed only).
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
set -e
for s in 50 70; do
    .venv/bin/sparseft quantize runs/smol-mag$s --scheme w8a8 --head int4 --calib gsm austen --nsamples 32 \
        --seqlen 512 --out runs/smol-mag$s-q-h4 --overwrite
    .venv/bin/sparseft compress runs/smol-mag$s-q-h4 --out runs/smol-mag$s-w8a8-h4 --overwrite
done
