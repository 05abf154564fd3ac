#!/bin/bash
# Whisper tiny.en, 50% sparse decoder (cross-attention k/v dense), one-shot SparseGPT: does a larger
# calibration sample (512 of 1000 espeak clips instead of 64 of the default 200) make the real-clip WER
# hold across calibration draws? Normalised WER on the 10 real pocketsphinx clips (never trained or
# calibrated on); one core. The 1000-clip set is built once (seed 7: texts, voices, speeds).
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper15}
speech=$out/espeak1000
[ -f $speech/train.jsonl ] || $S data speech --out $speech --train 1000 --test 10 --seed 7 --no-progress
run() {  # name, then oneshot arguments
    local name=$1; shift
    [ -f $out/$name/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.5 --target 'decoder\.layers\.' \
        --ignore 'encoder_attn\.(k|v)_proj' --no-progress --out $out/$name "$@" > $out/$name.log 2>&1
    echo "== $out/$name"; $S eval $out/$name --data librivox cards --json
}
for n in ${SIZES:-512}; do
    for seed in ${SEEDS:-0 1 2}; do run dec50kv-n$n-s$seed --calib $speech --nsamples $n --seed $seed; done
done
