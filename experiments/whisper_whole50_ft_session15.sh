#!/bin/bash
# Whisper tiny.en, 50% of every block (encoder and decoder), one-shot SparseGPT on 64 espeak clips (padding left
# out of the statistics), then session 15's fine-tune (lr 5e-5, CE + KD + SquareHead, 400 augmented espeak +
# flite clips, 150 steps, fp32) with nothing frozen; int8 on top. Session 8's recipe B (lr 3e-5) left this
# model at 7-9 errors of 92. Normalised WER on the 10 real pocketsphinx clips (dense 5); one core.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper15}
lr=${LR:-5e-5}
seed=${SEED:-0}
m=all50-s$seed
[ -f $out/$m/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.5 --nsamples 64 --calib espeak --seed $seed \
    --no-progress --out $out/$m > $out/$m.log 2>&1
echo "== $out/$m"; $S eval $out/$m --data librivox cards --json
f=$m-ft$lr
[ -f $out/$f/stage.json ] || $S finetune --student $out/$m --teacher whisper-tiny.en --data espeak flite --augment \
    --num-texts 400 --seqlen 128 --steps ${STEPS:-150} --batch-size 4 --lr $lr --loss ce+kd+squarehead \
    --out $out/$f > $out/$f.log 2>&1
echo "== $out/$f"; $S eval $out/$f --data librivox cards --json
[ -f $out/$f-int8/stage.json ] || $S compress $out/$f --format int8 --head int8 --out $out/$f-int8 > $out/$f-int8.log 2>&1
echo "== $out/$f-int8"; $S eval $out/$f-int8 --data librivox cards --json
