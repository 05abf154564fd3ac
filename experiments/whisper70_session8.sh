#!/bin/bash
# Whisper tiny.en 70%: SparseGPT (64 espeak clips) -> 200 steps CE+KD+SquareHead at lr 3e-5 on espeak + flite
# clips (400) with --augment -> int8 + int8 head; WER on the 10 real clips. One thread.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
S=.venv/bin/sparseft
[ -d runs/whisper-sgpt70 ] || $S oneshot whisper-tiny.en --sparsity 0.7 --calib espeak --nsamples 64 --out runs/whisper-sgpt70
[ -f runs/whisper70-aug-flite/stage.json ] || /usr/bin/time -v $S finetune --student runs/whisper-sgpt70 \
    --teacher whisper-tiny.en --data espeak flite --augment --num-texts 400 --seqlen 128 --steps 200 --batch-size 4 \
    --lr 3e-5 --loss ce+kd+squarehead --bf16 --eval-steps 50 --eval-data librivox cards --out runs/whisper70-aug-flite \
    > runs/whisper70-aug-flite.log 2>&1
[ -d runs/whisper70-aug-flite-int8 ] || $S compress runs/whisper70-aug-flite --format int8 --head int8 --out runs/whisper70-aug-flite-int8
for m in runs/whisper-sgpt70 runs/whisper70-aug-flite runs/whisper70-aug-flite-int8; do
  echo "== $m"; $S eval $m --data librivox cards
done
