"""`sparseft oneshot`: prune a model with calibration data (SparseGPT, Wanda) or by magnitude, block by block."""

from __future__ import annotations

import argparse

from sparseft.commands._common import (
    add_calibration_arguments,
    add_model_arguments,
    add_output_arguments,
    add_target_arguments,
    calibration_from,
    print_summary,
    settings_from,
    stage_io,
)

EPILOG = """examples:
  sparseft oneshot smollm2-135m --sparsity 0.5 --out runs/smollm2-sgpt50
  sparseft oneshot smollm2-135m --nm 2:4 --method wanda --out runs/smollm2-wanda-2of4
  sparseft oneshot smollm2-135m --sparsity 0.7 --allocation owl --out runs/smollm2-owl70
  sparseft oneshot ./my-model --calib notes.txt more.jsonl --nsamples 64 --seqlen 1024 --out runs/m50
  sparseft oneshot whisper-tiny.en --calib espeak --nsamples 32 --out runs/whisper-sgpt50
  sparseft oneshot ./my-t5 --calib pairs.tsv --out runs/t5-sgpt50

--calib: 'gsm' (generated variants of the packaged GSM math problems; the 100 originals stay held out
for `sparseft eval`), 'fortunes' (its calibration split), or files/folders (.txt: texts separated by
blank lines; .jsonl: a "text" field per line). Without --calib the model's kind decides: gsm for
causal LMs, 'espeak' (synthetic speech clips, 32 of them) for Whisper, 'gsm-en-de' (text pairs) for T5.
The output folder is a normal HF model folder (safetensors) plus masks.safetensors and stage.json
(the settings, per-layer sparsity and reconstruction error).

--low-memory auto (default) streams a local safetensors folder (packaged models included): only the
weights outside the blocks and one block are in memory at a time, and each pruned block is written out
at once; the result is identical to loading the whole model (--low-memory off). GGUF files, hub ids and
checkpoints whose tensor names differ from the model's load in memory; --low-memory on refuses them.

Per-layer errors: SparseGPT's are measured on every calibration token (it needs their Hessians anyway);
Wanda's and magnitude's on the first --error-batches batches (default 1), since their masks do not
need the Hessians: 'all' measures them exactly, at SparseGPT's collection cost; 0 skips them."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "oneshot",
        help="one-shot prune with calibration data: SparseGPT (default), Wanda or magnitude",
        description=(
            "Prune a model block by block from calibration data: each block's Linear layers are solved "
            "from their input statistics (SparseGPT: OBS weight updates; Wanda: |w|*||x||), and the pruned "
            "block's outputs feed the next block. Prints a per-layer report and saves the pruned model."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--method", default="sparsegpt", metavar="{sparsegpt,wanda,magnitude}",
                        help="layer solver (default sparsegpt; any solver registered in sparseft.prune.solvers)")
    parser.add_argument("--sparsity", type=float, default=0.5,
                        help="fraction of weights set to zero in each layer, in [0, 1) (default 0.5)")
    parser.add_argument("--nm", metavar="N:M",
                        help="semi-structured: keep N of every M weights along the input (e.g. 2:4); overrides --sparsity")
    parser.add_argument("--allocation", choices=["uniform", "owl"], default="uniform",
                        help="spread of --sparsity over blocks: uniform (default), or owl: blocks with more "
                             "outlier weights (|w|*||x|| above 5x their mean) keep more, mean sparsity unchanged")
    parser.add_argument("--owl-lambda", type=float, default=0.08,
                        help="OWL: a block's sparsity differs from --sparsity by at most twice this (default 0.08)")
    add_calibration_arguments(parser, nsamples=128, seqlen=512, batch=8, by_kind=True)
    parser.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block size (default 128)")
    parser.add_argument("--percdamp", type=float, default=0.01,
                        help="SparseGPT dampening, as a fraction of the Hessian's mean diagonal (default 0.01)")
    parser.add_argument("--device", help="process each block on this device (e.g. cuda); default: the model's")
    parser.add_argument("--low-memory", choices=["auto", "on", "off"], default="auto",
                        help="stream the weights block by block from a safetensors folder (default auto: "
                             "whenever the source allows it)")
    parser.add_argument("--error-batches", type=_error_batches, default=1, metavar="N|all",
                        help="batches on which Wanda's and magnitude's per-layer errors are measured (default 1)")
    add_target_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def _error_batches(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of batches or 'all', got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import OneShotSettings
    from sparseft.stages import run_oneshot

    calib = calibration_from(args, None, always=args.method != "magnitude")  # sources by model kind
    settings = settings_from(
        OneShotSettings, method=args.method, sparsity=args.sparsity, nm=args.nm, calib=calib,
        blocksize=args.blocksize, percdamp=args.percdamp, low_memory=args.low_memory, device=args.device,
        error_batches=args.error_batches, progress=not args.no_progress, targets=args.target, ignore=args.ignore,
        allocation=args.allocation, owl_lambda=args.owl_lambda,
    )  # fmt: skip
    if args.error_batches is None:  # 'all': None is a value here, not "use the default"
        settings = settings.model_copy(update={"error_batches": None})
    record = run_oneshot(settings, stage_io(args, args.out))
    print(f"saved pruned model, masks and report to {args.out}")
    print_summary(record, ("total_sparsity", "seconds"))
    return 0
