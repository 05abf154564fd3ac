#!/bin/bash
# Whisper tiny.en, 50% sparse decoder (k/v dense; PCT=70 for 70%): does fine-tuning lift the one-shot draws of
# experiments/whisper_token_masks_session15.sh (10 / 9 / 7 errors of 92) towards dense (5)? Session 13's
# lr 1e-5 moved no word; this tries 5e-5, the encoder frozen (the dense teacher's), CE + KD + SquareHead on
# 400 augmented espeak + flite clips (synthetic; the real clips are never trained or calibrated on), fp32
# (no AVX512-BF16 on this CPU); then int8 blocks + int8 proj_out (the encoder and k/v int8 with every column).
# Normalised WER on the 10 real pocketsphinx clips; one core per run.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper15}
lr=${LR:-5e-5}
pct=${PCT:-50}  # decoder sparsity in percent; 50's one-shot models come from whisper_token_masks_session15.sh
for seed in ${SEEDS:-0 1 2}; do
    base=dec${pct}kv-masked-s$seed
    [ -f $out/$base/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.$pct --nsamples 64 --calib espeak \
        --seed $seed --target 'decoder\.layers\.' --ignore 'encoder_attn\.(k|v)_proj' --no-progress --out $out/$base \
        > $out/$base.log 2>&1
    m=$base-ft$lr
    [ -f $out/$m/stage.json ] || $S finetune --student $out/$base --teacher whisper-tiny.en \
        --data espeak flite --augment --num-texts 400 --seqlen 128 --steps ${STEPS:-150} --batch-size 4 --lr $lr \
        --loss ce+kd+squarehead --freeze '^model\.encoder\.' --out $out/$m > $out/$m.log 2>&1
    echo "== $out/$m"; $S eval $out/$m --data librivox cards --json
    # int8 blocks and proj_out; the dense encoder and k/v as int8 with every column
    [ -f $out/$m-int8/stage.json ] || $S compress $out/$m --format int8 --head int8 --dense-layers int8 \
        --out $out/$m-int8 > $out/$m-int8.log 2>&1
    echo "== $out/$m-int8"; $S eval $out/$m-int8 --data librivox cards --json
done
