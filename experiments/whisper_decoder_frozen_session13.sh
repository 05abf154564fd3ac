#!/bin/bash
# Whisper tiny.en, 50% sparse decoder only, recovered with the encoder frozen (it stays the dense teacher's,
# so the decoder learns to read the features it will read at test time).
#   dec50kv:           one-shot SparseGPT of the decoder blocks on 64 espeak clips, the cross-attention key/value
#                      projections left dense (they run on 1500 encoder frames, as dense products anyway)
#   dec50kv-fz-LOSS:   + fine-tuning with --freeze '^model\.encoder\.' (LOSS: kd+squarehead, or with ce)
#   *-int8:            int8 blocks and proj_out, the dense layers as int8 with every column (--dense-layers int8)
# Normalised WER on the 10 real pocketsphinx clips (never trained or calibrated on).
set -e
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=passive
cd "$(dirname "$0")/.."
S=.venv/bin/sparseft
out=${1:-runs/whisper13}
[ -f $out/dec50kv/stage.json ] || $S oneshot whisper-tiny.en --sparsity 0.5 --calib espeak --nsamples 64 \
    --target 'decoder\.layers\.' --ignore 'encoder_attn\.(k|v)_proj' --out $out/dec50kv
for loss in ${LOSSES:-kd+squarehead ce+kd+squarehead}; do
    m=dec50kv-fz-${loss//+/-}
    [ -f $out/$m/stage.json ] || $S finetune --student $out/dec50kv --teacher whisper-tiny.en --data espeak flite \
        --augment --num-texts 400 --seqlen 128 --steps ${STEPS:-150} --batch-size 4 --lr ${LR:-1e-5} --loss $loss \
        --freeze '^model\.encoder\.' --bf16 --out $out/$m
done
for m in dec50kv $(ls $out | grep -- '-fz-' | grep -v int8); do
    [ -f $out/$m-int8/stage.json ] || $S compress $out/$m --format int8 --head int8 --dense-layers int8 --out $out/$m-int8
done
for m in $(ls $out); do echo "== $out/$m"; $S eval $out/$m --data librivox cards --json; done
