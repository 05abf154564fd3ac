#!/bin/bash
# Session 15 (Intel Xeon Ice Lake, AVX-512 VNNI, no BF16, no AMX): the session-14 runs again on another CPU:
# the session-9/11 speed models (benchmarks/session9_models.sh, benchmarks/session11_models.sh) on the native
# step against llama.cpp Q4_0 / Q8_0 in the same runs, 1 and 2 threads; read bandwidth probed before each run.
# TAG=_x names a re-run's records; ROUNDS="a b" sets the rounds.
cd "$(dirname "$0")/.."
source benchmarks/native_bench.sh  # probe, bench, $out
for round in ${ROUNDS:-a b}; do
    bench s15${TAG}_native50_w8a8_t1_$round 1 runs/smol-mag50-w8a8
    bench s15${TAG}_native70_w8a8_h4_t1_$round 1 runs/smol-mag70-w8a8-h4
    bench s15${TAG}_native70_w8a8_h4_t2_$round 2 runs/smol-mag70-w8a8-h4
done
