#!/bin/bash
# Quiet-machine speed runs of session 6 (1 thread, interleaved rounds, peers in the same run)
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd /work/main
.venv/bin/python benchmarks/whisper_ct2_compare.py --rounds 2 --prepared \
    --sparse "50% int8 + int8 head=runs/whisper-sgpt50-sh-int8" "70% int8 + int8 head (one-shot)=runs/whisper-sgpt70-int8" \
    --out benchmarks/results/whisper_ct2_session6.json 2>&1 | grep -v "Loading\|max_new\|generation_config\|attention mask" | tail -12
.venv/bin/sparseft bench --model runs/smol-mag70-int8 --baseline smollm2-135m --tokens 64 --rounds 2 --threads 1 \
    --fuse --compile --peer llama.cpp llama.cpp:Q4_0 llama.cpp:Q8_0 --out benchmarks/results/bench_peers_session6 2>&1 \
    | grep -v "Loading\|llama_model_quantize\|^\[" | tail -8
