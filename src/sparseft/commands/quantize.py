"""`sparseft quantize`: INT8 fake-quantization (W8A8 or weight-only W8A16) that keeps every zero."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparseft.commands.prune import add_model_arguments, add_target_arguments
from sparseft.errors import ConfigError

EPILOG = """examples:
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a16 --out runs/smollm2-sgpt50-w8a16
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a8 --ignore 'mlp\\.down_proj$' --out runs/s50-w8a8
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a16 --method gptq --calib gsm --out runs/s50-gptq
  sparseft quantize smollm2-135m --scheme w8a8-static --calib gsm --nsamples 16 --out runs/w8a8s
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a8 --sensitivity --keep-sensitive 4 --out runs/s50-w8a8

Schemes: w8a16 = int8 weights, activations stay float (runs on the runtime's int8 kernels);
w8a8 = int8 weights + int8 activations quantized per token at run time; w8a8-static = one activation
scale per layer, calibrated on --calib samples. Weights: symmetric int8 per output channel (or
--weights per_tensor); pruned weights stay exactly zero (masks.safetensors of MODEL is honoured).
The output folder is an HF model folder holding the dequantized weights (loadable anywhere; W8A8's
activation quantization is re-attached by sparseft.quant.load_quantized) + quant_scales.safetensors +
masks.safetensors (if sparse) + sparseft.json. Run it on the int8 kernels with
`sparseft.runtime.sparsify_model(model, "int8")`."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="INT8 fake-quantize a (sparse) model: W8A8 or weight-only W8A16, zeros kept",
        description="Quantize the Linear layers of a model to int8 (quantize-dequantize), keeping pruned "
        "weights at zero, and save it with its scales.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--scheme", choices=["w8a8", "w8a16", "w8a8-static"], default="w8a8",
                        help="w8a8 (dynamic per-token activations, default), w8a16 (weight-only), "
                             "w8a8-static (per-tensor activation scales from --calib)")
    parser.add_argument("--weights", choices=["per_channel", "per_tensor"], default="per_channel",
                        help="weight scale granularity (default per_channel: one scale per output row)")
    parser.add_argument("--method", choices=["rtn", "gptq"], default="rtn",
                        help="weight rounding: rtn (round to nearest, default, no data) or gptq (error "
                             "compensation from --calib inputs; pruned weights stay zero)")
    parser.add_argument("--calib", nargs="+", metavar="SOURCE", default=["gsm"],
                        help="calibration texts for static scales, gptq and --sensitivity: gsm (default), fortunes, "
                             "or .txt/.jsonl files; unused by w8a8/w8a16 without --sensitivity")
    parser.add_argument("--nsamples", type=int, default=16, help="calibration windows (default 16)")
    parser.add_argument("--seqlen", type=int, default=256, help="tokens per calibration window (default 256)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the calibration windows")
    parser.add_argument("--sensitivity", action="store_true",
                        help="print the per-layer sensitivity report (relative output error of each layer)")
    parser.add_argument("--keep-sensitive", type=int, default=0, metavar="K",
                        help="leave the K layers with the largest W8A8 error in full precision (implies --sensitivity)")
    add_target_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (written to a temp folder, then renamed)")
    parser.set_defaults(func=run)


def _masks_of(source: str):
    from sparseft.models.saving import MASKS_FILE
    from sparseft.prune import load_masks

    path = Path(source) / MASKS_FILE
    return load_masks(path) if path.is_file() else None


def run(args: argparse.Namespace) -> int:
    from sparseft.data.calibration import calibration_batches, calibration_texts
    from sparseft.models import load_model, load_tokenizer
    from sparseft.quant import QuantScheme, layer_sensitivity, quantize_model, save_quantized

    if args.keep_sensitive < 0:
        raise ConfigError(f"--keep-sensitive must be >= 0, got {args.keep_sensitive}")
    scheme = QuantScheme.parse(args.scheme, args.weights)
    model = load_model(args.model, args.dtype, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code, missing_ok=True)
    masks = _masks_of(args.model)
    want_sensitivity = args.sensitivity or args.keep_sensitive > 0
    batches = None
    if scheme.activations == "static" or args.method == "gptq" or want_sensitivity:
        if tokenizer is None or model.main_input_name != "input_ids":
            raise ConfigError("calibration (static scales, gptq, --sensitivity) needs a text model with a tokenizer")
        texts = calibration_texts(args.calib, seed=args.seed)
        batches = calibration_batches(tokenizer, texts, args.nsamples, args.seqlen, args.batch_size, args.seed,
                                      encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)))
    ignore = list(args.ignore or [])
    sensitivity = None
    if want_sensitivity:
        report = layer_sensitivity(model, batches, args.target, ignore, args.weights, masks)
        print(report.format(max_rows=20))
        sensitivity = report.as_dict()["layers"]
        kept = report.suggest_ignore(threshold=-1.0)[: args.keep_sensitive]
        if kept:
            print(f"left in full precision: {', '.join(r.name for r in report.layers[: args.keep_sensitive])}")
        ignore += kept
    fq = quantize_model(model, scheme, args.target, ignore or None, masks, batches, args.method)
    record = {"source": str(args.model), "method": args.method, "calib": args.calib if batches else None, "nsamples": args.nsamples,
              "seqlen": args.seqlen, "ignore": ignore, "sensitivity": sensitivity}  # fmt: skip
    save_quantized(model, args.out, fq, tokenizer=tokenizer, masks=masks, record=record)
    print(f"saved {scheme.name} model ({len(fq.layers)} int8 layers), scales and record to {args.out}")
    print(json.dumps({"scheme": scheme.name, "quantized_layers": len(fq.layers), "ignored": ignore}))
    return 0
