#!/bin/bash
# Session 10 (AMD EPYC Zen 5, AVX-512, no AMX): the native step with the all-stored lm_head kernels, the
# batched native prompt and the vector exp, against llama.cpp in the same runs; 1 and 2 threads; read
# bandwidth probed before each run. Models: benchmarks/session9_models.sh (re-run it: heads >= 95% dense
# now store every column).
cd "$(dirname "$0")/.."
source benchmarks/native_bench.sh  # probe, bench, $out
.venv/bin/python benchmarks/dense_rows.py --out "$out/dense_rows_session10.json"
.venv/bin/python benchmarks/decode_breakdown.py runs/smol-mag70-w8a8 --native --out "$out/breakdown70_w8a8_session10.json" \
    | grep -E '"(step_ms|linear_kernels_ms|bytes_bound_ms|read_bandwidth_gbs|step_vs_bytes_bound|lm_head)"'
bench s10_native70_w8a8_t1 1 runs/smol-mag70-w8a8
bench s10_native50_w8a8_t1 1 runs/smol-mag50-w8a8
bench s10_native70_int8_t1 1 runs/smol-mag70-int8
bench s10_native50_int8_t1 1 runs/smol-mag50-int8
bench s10_native70_w8a8_t2 2 runs/smol-mag70-w8a8
