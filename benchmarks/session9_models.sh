#!/bin/bash
# The SmolLM2-135M models of the session-9 speed runs (magnitude-pruned: speed only, not accuracy).
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
set -e
for s in 50 70; do
    .venv/bin/sparseft prune smollm2-135m --sparsity 0.$s --out runs/smol-mag$s
    .venv/bin/sparseft compress runs/smol-mag$s --out runs/smol-mag$s-int8 --format int8 --head int8
    .venv/bin/sparseft quantize runs/smol-mag$s --scheme w8a8 --out runs/smol-mag$s-q
    .venv/bin/sparseft compress runs/smol-mag$s-q --out runs/smol-mag$s-w8a8 --head int8
done
# the 70% W8A8 blocks with an int4 output projection (RTN, a scale per 128 columns)
.venv/bin/sparseft compress runs/smol-mag70-q --out runs/smol-mag70-w8a8-h4 --head int4
