"""`sparseft quantize`: INT8 fake-quantization (W8A8 or weight-only W8A16) that keeps every zero."""

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
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a16 --out runs/smollm2-sgpt50-w8a16
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a8 --ignore 'mlp\\.down_proj$' --out runs/s50-w8a8
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a16 --method gptq --calib gsm --out runs/s50-gptq
  sparseft quantize smollm2-135m --scheme w8a8-static --calib gsm --nsamples 16 --out runs/w8a8s
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a8 --sensitivity --keep-sensitive 4 --out runs/s50-w8a8
  sparseft quantize runs/smollm2-sgpt50 --scheme w8a8 --head int4 --calib gsm austen --out runs/s50-w8a8-h4

Schemes: w8a16 = int8 weights, activations stay float (runs on the runtime's int8 kernels);
w8a8 = int8 weights + int8 activations quantized per token at run time; w8a8-static = one activation
scale per layer, calibrated on --calib samples. Weights: symmetric int8 per output channel (or
--weights per_tensor); pruned weights stay exactly zero (masks.safetensors of MODEL is honoured).
The output folder is an HF model folder holding the dequantized weights (loadable anywhere; W8A8's
activation quantization is re-attached by sparseft.quant.load_quantized) + quant_scales.safetensors +
masks.safetensors (if sparse) + stage.json. Run it on the int8 kernels with
`sparseft compress` (the same int8 values and scales)."""


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
    add_calibration_arguments(parser, nsamples=16, seqlen=256, batch=4)
    parser.add_argument("--sensitivity", action="store_true",
                        help="print the per-layer sensitivity report (relative output error of each layer)")
    parser.add_argument("--keep-sensitive", type=int, default=0, metavar="K",
                        help="leave the K layers with the largest W8A8 error in full precision (implies --sensitivity)")
    parser.add_argument("--head", choices=["int4", "int8"], default=None,
                        help="also quantize the output projection (lm_head) by GPTQ on the --calib inputs: int4 "
                             "(a scale per row and 128 columns) or int8 (per row); a tied head is untied, the "
                             "embedding keeps full precision; `sparseft compress` stores it in that format")
    add_target_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import QuantizeSettings
    from sparseft.stages import run_quantize

    settings = settings_from(
        QuantizeSettings, scheme=args.scheme, weights=args.weights, method=args.method,
        calib=calibration_from(args, None, always=True), sensitivity=args.sensitivity, keep_sensitive=args.keep_sensitive,
        targets=args.target, ignore=args.ignore, head=args.head,
    )  # fmt: skip
    record = run_quantize(settings, stage_io(args, args.out))
    print(f"saved {record['scheme']} model ({record['quantized_layers']} int8 layers), scales and record to {args.out}")
    print_summary(record, ("scheme", "quantized_layers", "ignored"))
    return 0
