#!/bin/bash
# Whisper tiny.en 50%: does more varied training speech close the real-speech WER gap?
# One SparseGPT model (64 espeak clips, as session 6), then 150 steps CE+KD+SquareHead at lr 3e-5 on
#   A: espeak clips with --augment (room echo, noise, gain per read)
#   B: espeak + flite clips (400: 200 texts each, other voices) with --augment
# run side by side, one thread each; then int8 + int8 head and WER on the 10 real clips.
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
S=.venv/bin/sparseft
[ -d runs/whisper-sgpt50 ] || $S oneshot whisper-tiny.en --sparsity 0.5 --calib espeak --nsamples 64 --out runs/whisper-sgpt50
train() {  # NAME NUM_TEXTS SOURCES...
  local name=$1 n=$2; shift 2
  [ -f runs/$name/stage.json ] || /usr/bin/time -v $S finetune --student runs/whisper-sgpt50 --teacher whisper-tiny.en \
      --data "$@" --augment --num-texts $n --seqlen 128 --steps 150 --batch-size 4 --lr 3e-5 --loss ce+kd+squarehead \
      --bf16 --eval-steps 50 --eval-data librivox cards --out runs/$name > runs/$name.log 2>&1
  [ -d runs/$name-int8 ] || $S compress runs/$name --format int8 --head int8 --out runs/$name-int8
}
train whisper50-aug 200 espeak &
train whisper50-aug-flite 400 espeak flite &
wait
for m in runs/whisper-sgpt50 runs/whisper50-aug runs/whisper50-aug-int8 runs/whisper50-aug-flite runs/whisper50-aug-flite-int8; do
  echo "== $m"; $S eval $m --data librivox cards
done
