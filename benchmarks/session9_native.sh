#!/bin/bash
# Session 9 (AMD EPYC Zen 4, AVX-512, no AMX): the native decode step (one C call per token) against the
# compiled HF step and llama.cpp, same runs; 1 and 2 threads; read bandwidth probed before each run.
# Models: benchmarks/session9_models.sh.
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
out=benchmarks/results
probe() {  # read bandwidth (GB/s) of torch.sum over 256 MB with $1 threads
    .venv/bin/python -c "import torch; torch.set_num_threads($1); from sparseft.runtime.timing import bandwidth_gbs; print(f'bandwidth {$1} thread(s): {bandwidth_gbs():.1f} GB/s')"
}
bench() {  # bench NAME THREADS MODEL BASELINE ARGS...
    local name=$1 threads=$2 model=$3 baseline=$4; shift 4
    local peers=""  # the peers read the packaged dense model's own files
    [ "$baseline" = smollm2-135m ] && peers="--peer llama.cpp llama.cpp:Q4_0 llama.cpp:Q8_0"
    probe "$threads"
    .venv/bin/sparseft bench --model "$model" --baseline "$baseline" --tokens 64 --rounds 5 --threads "$threads" \
        --fuse "$@" $peers --out "$out/$name" 2>&1 \
        | grep -v "Loading\|llama_\|^\[\|^{" | grep "tokens/s"
}
bench native70_w8a8_t1 1 runs/smol-mag70-w8a8 smollm2-135m --native
bench native70_int8_t1 1 runs/smol-mag70-int8 smollm2-135m --native
bench native50_w8a8_t1 1 runs/smol-mag50-w8a8 smollm2-135m --native
bench native50_int8_t1 1 runs/smol-mag50-int8 smollm2-135m --native
bench native70_w8a8_int4head_t1 1 runs/smol-mag70-w8a8-h4 runs/smol-mag70-w8a8 --native
bench native70_w8a8_t2 2 runs/smol-mag70-w8a8 smollm2-135m --native
bench compiled70_w8a8_t1 1 runs/smol-mag70-w8a8 smollm2-135m --compile
