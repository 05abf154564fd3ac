#!/bin/bash
# Quiet-machine speed runs of session 8 (Intel Xeon with AMX; 1 thread, interleaved rounds, peers in the same run)
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/whisper_ct2_compare.py --rounds 3 --prepared \
    --sparse "50% int8 + int8 head (A)=runs/whisper50-aug-int8" "50% int8 + int8 head (B)=runs/whisper50-aug-flite-int8" \
             "70% int8 + int8 head=runs/whisper70-aug-flite-int8" \
    --out benchmarks/results/whisper_ct2_session8.json 2>&1 | grep -v "Loading\|max_new\|generation_config\|attention mask" | tail -14
.venv/bin/sparseft bench --model runs/smol-mag70-int8 --baseline smollm2-135m --tokens 64 --rounds 3 --threads 1 \
    --fuse --compile --peer llama.cpp llama.cpp:Q4_0 llama.cpp:Q8_0 --out benchmarks/results/bench_peers_session8 2>&1 \
    | grep -v "Loading\|llama_model_quantize\|^\[" | tail -8
