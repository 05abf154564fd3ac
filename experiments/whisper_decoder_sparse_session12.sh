#!/bin/bash
# Whisper tiny.en with sparsity only where it pays on a CPU without AMX: the decoder (batch 1 per token,
# sparse kernels) at 50 / 70%, the encoder left dense (its 1500-frame matmuls run as dense bf16 products
# either way, runtime/dense_batch.py, so pruning it costs accuracy and buys no time).
#   decS:         one-shot SparseGPT of the decoder blocks on 64 espeak clips
#   decS-ft:      + session 8's recipe B (150 steps CE + KD + SquareHead on 400 espeak + flite clips, augmented)
#   *-int8:       int8 blocks, int8 proj_out, the dense encoder as int8 with every column (--dense-layers int8)
# Normalised WER on the 10 real pocketsphinx clips (never trained or calibrated on).
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper12}
for s in ${SPARSITIES:-50 70}; do
    [ -f $out/dec$s/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.$s --calib espeak --nsamples 64 \
        --target 'decoder\.layers\.' --out $out/dec$s
    [ -f $out/dec$s-ft/stage.json ] || $S finetune --student $out/dec$s --teacher whisper-tiny.en --data espeak flite \
        --augment --num-texts 400 --seqlen 128 --steps 150 --batch-size 4 --lr 3e-5 --loss ce+kd+squarehead --bf16 \
        --out $out/dec$s-ft
    for m in dec$s dec$s-ft; do
        [ -f $out/$m-int8/stage.json ] || $S compress $out/$m --format int8 --head int8 --dense-layers int8 --out $out/$m-int8
    done
    for m in dec$s dec$s-int8 dec$s-ft dec$s-ft-int8; do echo "== $out/$m"; $S eval $out/$m --data librivox cards --json; done
done
