# Shared by the session scripts (source it): `probe THREADS` prints the read bandwidth of torch.sum over
# 256 MB with that many threads; `bench NAME THREADS MODEL ARGS...` runs `sparseft bench --native` of MODEL
# against the dense SmolLM2 and llama.cpp Q4_0 / Q8_0 in the same rounds, record in $out/NAME.
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
out=${out:-benchmarks/results}
probe() {
    .venv/bin/python -c "import torch; torch.set_num_threads($1); from sparseft.runtime.timing import bandwidth_gbs; print(f'bandwidth {$1} thread(s): {bandwidth_gbs():.1f} GB/s')"
}
bench() {
    local name=$1 threads=$2 model=$3; shift 3
    probe "$threads"
    .venv/bin/sparseft bench --model "$model" --baseline smollm2-135m --tokens 64 --rounds 5 --threads "$threads" \
        --fuse --native "$@" --peer llama.cpp:Q4_0 llama.cpp:Q8_0 --out "$out/$name" 2>&1 \
        | grep -v "Loading\|llama_\|^\[\|^{" | grep "tokens/s"
}
