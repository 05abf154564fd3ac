#!/bin/bash
# Session 10 (AMD EPYC Zen 5, AVX-512, no AMX): the native step with the all-stored lm_head kernels, the
# batched native prompt and the vector exp, against llama.cpp in the same runs; 1 and 2 threads; read
# bandwidth probed before each run. Models: benchmarks/session9_models.sh (re-run it: heads >= 95% dense
# now store every column).
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
out=benchmarks/results
probe() {  # read bandwidth (GB/s) of torch.sum over 256 MB with $1 threads
    .venv/bin/python -c "import torch; torch.set_num_threads($1); from sparseft.runtime.timing import bandwidth_gbs; print(f'bandwidth {$1} thread(s): {bandwidth_gbs():.1f} GB/s')"
}
bench() {  # bench NAME THREADS MODEL ARGS...
    local name=$1 threads=$2 model=$3; shift 3
    probe "$threads"
    .venv/bin/sparseft bench --model "$model" --baseline smollm2-135m --tokens 64 --rounds 5 --threads "$threads" \
        --fuse --native "$@" --peer llama.cpp:Q4_0 llama.cpp:Q8_0 --out "$out/$name" 2>&1 \
        | grep -v "Loading\|llama_\|^\[\|^{" | grep "tokens/s"
}
.venv/bin/python benchmarks/dense_rows.py --out "$out/dense_rows_session10.json"
.venv/bin/python benchmarks/decode_breakdown.py runs/smol-mag70-w8a8 --native --out "$out/breakdown70_w8a8_session10.json" \
    | grep -E '"(step_ms|linear_kernels_ms|bytes_bound_ms|read_bandwidth_gbs|step_vs_bytes_bound|lm_head)"'
bench s10_native70_w8a8_t1 1 runs/smol-mag70-w8a8
bench s10_native50_w8a8_t1 1 runs/smol-mag50-w8a8
bench s10_native70_int8_t1 1 runs/smol-mag70-int8
bench s10_native50_int8_t1 1 runs/smol-mag50-int8
bench s10_native70_w8a8_t2 2 runs/smol-mag70-w8a8
