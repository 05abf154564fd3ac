"""`sparseft oneshot`: prune a model with calibration data (SparseGPT, Wanda) or by magnitude, block by block."""

from __future__ import annotations

import argparse
import json

from sparseft.commands.prune import add_model_arguments, add_target_arguments
from sparseft.errors import ConfigError

EPILOG = """examples:
  sparseft oneshot smollm2-135m --sparsity 0.5 --out runs/smollm2-sgpt50
  sparseft oneshot smollm2-135m --nm 2:4 --method wanda --out runs/smollm2-wanda-2of4
  sparseft oneshot ./my-model --calib notes.txt more.jsonl --nsamples 64 --seqlen 1024 --out runs/m50

--calib: 'gsm' (generated variants of the packaged GSM math problems; the 100 originals stay held out
for `sparseft eval`), 'fortunes', or text files (.txt read whole, .jsonl with a "text" field per line).
The output folder is a normal HF model folder (safetensors) plus masks.safetensors and sparseft.json
(per-layer sparsity and reconstruction error).

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
    parser.add_argument("--method", choices=["sparsegpt", "wanda", "magnitude"], default="sparsegpt",
                        help="layer solver (default sparsegpt)")
    parser.add_argument("--sparsity", type=float, default=0.5,
                        help="fraction of weights set to zero in each layer, in [0, 1) (default 0.5)")
    parser.add_argument("--nm", metavar="N:M",
                        help="semi-structured: keep N of every M weights along the input (e.g. 2:4); overrides --sparsity")
    parser.add_argument("--calib", nargs="+", metavar="SOURCE",
                        help="calibration texts: gsm (default; magnitude uses none unless given), fortunes, "
                             "or .txt/.jsonl files")
    parser.add_argument("--nsamples", type=int, default=128, help="calibration windows (default 128)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window (default 512)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the calibration windows")
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
    parser.add_argument("--out", required=True, help="output folder (written to a temp folder, then renamed)")
    parser.set_defaults(func=run)


def _error_batches(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of batches or 'all', got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from sparseft.data.calibration import calibration_batches, calibration_texts
    from sparseft.models import load_tokenizer
    from sparseft.prune.memory import peak_rss_mib
    from sparseft.prune.streaming import load_for_oneshot, oneshot_to_folder

    model, stream = load_for_oneshot(args.model, args.dtype, args.low_memory, trust_remote_code=args.trust_remote_code)
    if model.main_input_name != "input_ids":
        raise ConfigError(
            f"`sparseft oneshot` calibrates text models; {args.model} takes {model.main_input_name} "
            "(speech): call sparseft.prune.streaming.oneshot_to_folder with batches of its inputs instead"
        )
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    batches = None
    calib = args.calib or (["gsm"] if args.method != "magnitude" else None)
    if calib:  # magnitude needs data only to report output errors
        texts = calibration_texts(calib, seed=args.seed)
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        batches = calibration_batches(tokenizer, texts, args.nsamples, args.seqlen, args.batch_size,
                                      args.seed, encoder_decoder=encoder_decoder)
        del texts

    def record(report) -> dict:
        # Peak memory of loading + pruning (streamed: + writing the blocks), before the final files.
        return {"stage": "oneshot", "source": str(args.model), "calib": calib, "nsamples": args.nsamples,
                "seqlen": args.seqlen, "seed": args.seed, "blocksize": args.blocksize, "percdamp": args.percdamp,
                "low_memory": stream is not None, "error_batches": args.error_batches,
                "peak_rss_before_save_mib": round(peak_rss_mib(), 1), **report.as_dict()}

    report = oneshot_to_folder(
        model, args.out, batches, stream=stream, tokenizer=tokenizer, record=record, method=args.method,
        sparsity=args.sparsity, nm=args.nm, targets=args.target, ignore=args.ignore, blocksize=args.blocksize,
        percdamp=args.percdamp, progress=not args.no_progress, device=args.device, error_batches=args.error_batches,
    )
    print(report.format())
    print(f"{'streamed block by block' if stream else 'in memory'}; peak memory {peak_rss_mib():.0f} MiB")
    print(f"saved pruned model, masks and report to {args.out}")
    print(json.dumps({"total_sparsity": round(report.total_sparsity, 4), "seconds": round(report.seconds, 1)}))
    return 0
