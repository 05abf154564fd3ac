#!/bin/bash
# Whisper tiny.en 50% with its proj_out (51864 x 384, two thirds of the decoder's bytes per token) in 4
# bits: session 8's recipe B (SparseGPT 50% on 64 espeak clips; 150 steps CE + KD + SquareHead on espeak +
# flite clips, augmented, lr 3e-5), then
#   int8:  int8 blocks + int8 proj_out (round to nearest; `compress --format int8 --head int8`)
#   int4h: int8 blocks + int4 proj_out by GPTQ (`quantize --scheme w8a16 --head int4`, 32 espeak clips)
# normalised WER on the 10 real pocketsphinx clips, then per-clip time against CTranslate2 int8 (1 thread).
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper11}
[ -f $out/sgpt50/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.5 --calib espeak --nsamples 64 --out $out/sgpt50
[ -f $out/ft50/stage.json ] || $S finetune --student $out/sgpt50 --teacher whisper-tiny.en --data espeak flite --augment \
    --num-texts 400 --seqlen 128 --steps 150 --batch-size 4 --lr 3e-5 --loss ce+kd+squarehead --bf16 --out $out/ft50
$S compress $out/ft50 --format int8 --head int8 --out $out/ft50-int8 --overwrite
$S quantize $out/ft50 --scheme w8a16 --head int4 --calib espeak --nsamples 32 --out $out/ft50-q-h4 --overwrite
$S compress $out/ft50-q-h4 --out $out/ft50-int8-h4 --overwrite
for m in $out/ft50 $out/ft50-int8 $out/ft50-int8-h4; do
    echo "== $m"; $S eval $m --data librivox cards --json
done
.venv/bin/python benchmarks/whisper_ct2_compare.py --rounds 3 --prepared \
    --sparse "50% int8=$out/ft50-int8" "50% int8 + int4 head=$out/ft50-int8-h4" \
    --out benchmarks/results/whisper_ct2_session11.json
