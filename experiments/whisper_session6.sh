#!/bin/bash
# Whisper tiny.en 50% / 70%: SparseGPT (64 espeak clips) -> 150 steps CE+KD+SquareHead -> int8 + int8 head
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
S=.venv/bin/sparseft
for P in 50 70; do
  [ -d runs/whisper-sgpt$P ] || $S oneshot whisper-tiny.en --sparsity 0.$P --calib espeak --nsamples 64 --out runs/whisper-sgpt$P
  /usr/bin/time -v $S finetune --student runs/whisper-sgpt$P --teacher whisper-tiny.en --data espeak --num-texts 200 --seqlen 128 \
      --steps 150 --batch-size 4 --lr 3e-5 --loss ce+kd+squarehead --bf16 --eval-steps 50 --eval-data librivox cards \
      --out runs/whisper-sgpt$P-sh 2>&1 | grep -v "it/s\]" | tail -30
  $S compress runs/whisper-sgpt$P-sh --format int8 --head int8 --out runs/whisper-sgpt$P-sh-int8
  $S eval runs/whisper-sgpt$P --data librivox cards
  $S eval runs/whisper-sgpt$P-sh --data librivox cards
  $S eval runs/whisper-sgpt$P-sh-int8 --data librivox cards
done
