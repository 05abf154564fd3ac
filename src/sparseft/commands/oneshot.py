"""`sparseft oneshot`: prune a model with calibration data (SparseGPT, Wanda) or by magnitude, block by block."""

from __future__ import annotations

import argparse
import json
import resource

from sparseft.commands.prune import add_model_arguments, add_target_arguments
from sparseft.errors import ConfigError

EPILOG = """examples:
  sparseft oneshot smollm2-135m --sparsity 0.5 --out runs/smollm2-sgpt50
  sparseft oneshot smollm2-135m --nm 2:4 --method wanda --out runs/smollm2-wanda-2of4
  sparseft oneshot ./my-model --calib notes.txt more.jsonl --nsamples 64 --seqlen 1024 --out runs/m50

--calib: 'gsm' (generated variants of the packaged GSM math problems; the 100 originals stay held out
for `sparseft eval`), 'fortunes', or text files (.txt read whole, .jsonl with a "text" field per line).
The output folder is a normal HF model folder (safetensors) plus masks.safetensors and sparseft.json
(per-layer sparsity and reconstruction error)."""


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
    add_target_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--out", required=True, help="output folder (written to a temp folder, then renamed)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.data.calibration import calibration_batches, calibration_texts
    from sparseft.models import load_model, load_tokenizer
    from sparseft.models.saving import save_model_folder
    from sparseft.prune.driver import oneshot

    model = load_model(args.model, args.dtype, trust_remote_code=args.trust_remote_code)
    if model.main_input_name != "input_ids":
        raise ConfigError(
            f"`sparseft oneshot` calibrates text models; {args.model} takes {model.main_input_name} "
            "(speech): call sparseft.prune.driver.oneshot with batches of its inputs instead"
        )
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    batches = None
    calib = args.calib or (["gsm"] if args.method != "magnitude" else None)
    if calib:  # magnitude needs data only to report output errors
        texts = calibration_texts(calib, seed=args.seed)
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        batches = calibration_batches(tokenizer, texts, args.nsamples, args.seqlen, args.batch_size,
                                      args.seed, encoder_decoder=encoder_decoder)
    report = oneshot(
        model, batches, method=args.method, sparsity=args.sparsity, nm=args.nm, targets=args.target,
        ignore=args.ignore, blocksize=args.blocksize, percdamp=args.percdamp, progress=not args.no_progress,
        device=args.device,
    )
    # Peak memory of loading + pruning, before saving (save_pretrained briefly holds a second copy).
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report.format())
    print(f"peak memory before saving: {peak_mib:.0f} MiB")
    record = {"stage": "oneshot", "source": str(args.model), "calib": calib, "nsamples": args.nsamples,
              "seqlen": args.seqlen, "seed": args.seed, "blocksize": args.blocksize, "percdamp": args.percdamp,
              "peak_rss_before_save_mib": round(peak_mib, 1), **report.as_dict()}
    save_model_folder(model, args.out, tokenizer=tokenizer, masks=report.masks, record=record)
    print(f"saved pruned model, masks and report to {args.out}")
    print(json.dumps({"total_sparsity": round(report.total_sparsity, 4), "seconds": round(report.seconds, 1)}))
    return 0
