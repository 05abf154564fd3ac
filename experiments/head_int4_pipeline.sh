#!/bin/bash
# Issue 12/16: what the output projection's value type costs a real sparse model, through the CLI only.
# SparseGPT 50% of the 600-step teacher (runs/steps600/sgpt50, session 10), W8A8 blocks, and its head as
# int8 (round to nearest, `compress --head int8`), int4 round to nearest (`compress --head int4`) and
# int4 GPTQ (`quantize --head int4`, calibration from the gsm + austen train splits); perplexity on the
# test splits (held-out GSM templates; Persuasion), first 100 texts each. ~15 min on one core.
export OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
set -e
src=${1:-runs/steps600/sgpt50}
out=${2:-runs/head4}
sf=.venv/bin/sparseft
calib="--calib gsm austen --nsamples 32 --seqlen 512"
$sf quantize "$src" --scheme w8a8 $calib --out "$out/q" --overwrite
$sf quantize "$src" --scheme w8a8 $calib --head int4 --out "$out/q-h4gptq" --overwrite
$sf compress "$out/q" --head int8 --out "$out/h8" --overwrite
$sf compress "$out/q" --head int4 --out "$out/h4rtn" --overwrite
$sf compress "$out/q-h4gptq" --out "$out/h4gptq" --overwrite
for m in "$src" "$out/h8" "$out/h4rtn" "$out/h4gptq"; do
    echo "== $m"
    $sf eval "$m" --data gsm austen --max-texts 100 --tokenizer "$src" --json
done
