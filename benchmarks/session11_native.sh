#!/bin/bash
# Session 11 (AMD EPYC Zen 5, AVX-512, no AMX): the int4 lm_head (GPTQ in the quantize stage, the dense-row
# int4 kernel) against the int8 one, 70% and 50% W8A8 blocks, against llama.cpp Q4_0 / Q8_0 in the same
# runs; read bandwidth probed before each run. Models: benchmarks/session9_models.sh, then
# benchmarks/session11_models.sh. TAG=_x names a re-run's records; ROUNDS="a b c" sets the rounds.
cd "$(dirname "$0")/.."
source benchmarks/native_bench.sh  # probe, bench, $out
.venv/bin/python benchmarks/head_formats.py --out "$out/head_formats_session11${TAG}.json" | grep -A4 '"ms"'
.venv/bin/python benchmarks/decode_breakdown.py runs/smol-mag70-w8a8-h4 --native --out "$out/breakdown70_w8a8_h4_session11${TAG}.json" \
    | grep -E '"(step_ms|linear_kernels_ms|bytes_bound_ms|read_bandwidth_gbs|step_vs_bytes_bound|lm_head)"'
for round in ${ROUNDS:-a b}; do
    bench s11${TAG}_native70_w8a8_h4_t1_$round 1 runs/smol-mag70-w8a8-h4
    bench s11${TAG}_native70_w8a8_t1_$round 1 runs/smol-mag70-w8a8
    bench s11${TAG}_native50_w8a8_h4_t1_$round 1 runs/smol-mag50-w8a8-h4
    bench s11${TAG}_native50_w8a8_t1_$round 1 runs/smol-mag50-w8a8
done
bench s11${TAG}_native70_w8a8_h4_t2 2 runs/smol-mag70-w8a8-h4
