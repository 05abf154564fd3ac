#!/bin/bash
# Whisper tiny.en, 50% sparse decoder (cross-attention k/v dense), one-shot SparseGPT: how much the real-clip
# WER moves with the calibration sample (seeds of 64 espeak clips) and with flite's voices added to it.
# Normalised WER on the 10 real pocketsphinx clips (never trained or calibrated on); one core.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper14}
run() {  # name, then oneshot arguments
    local name=$1; shift
    [ -f $out/$name/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.5 --nsamples 64 --target 'decoder\.layers\.' \
        --ignore 'encoder_attn\.(k|v)_proj' --no-progress --out $out/$name "$@"
    echo "== $out/$name"; $S eval $out/$name --data librivox cards --json
}
for seed in ${SEEDS:-0 1 2}; do run dec50kv-s$seed --calib espeak --seed $seed; done
run dec50kv-flite --calib espeak flite
