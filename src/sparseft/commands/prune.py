"""`sparseft prune`: data-free magnitude pruning (uniform, global or N:M) of any HF model."""

from __future__ import annotations

import argparse
import json

from sparseft.errors import ConfigError

EPILOG = """examples:
  sparseft prune smollm2-135m --sparsity 0.5 --out runs/smollm2-mag50
  sparseft prune smollm2-135m --nm 2:4 --out runs/smollm2-2of4
  sparseft prune ./my-model --sparsity 0.7 --scheme global --ignore 'down_proj$' --out runs/g70
  sparseft prune ./my-model --sparsity 0.5 --override 'mlp\\.down_proj=0.3' --out runs/mixed

The output folder is a normal HF model folder (safetensors) plus masks.safetensors and sparseft.json
(per-layer sparsity). For pruning with calibration data (SparseGPT, Wanda) use `sparseft oneshot`."""


def parse_override(text: str) -> tuple[str, float]:
    """'REGEX=SPARSITY' -> (regex, sparsity)."""
    pattern, sep, value = text.rpartition("=")
    try:
        if not sep or not pattern:
            raise ValueError
        return pattern, float(value)
    except ValueError:
        raise ConfigError(f"--override must look like 'REGEX=SPARSITY' (e.g. 'down_proj=0.3'), got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by commands that load a model."""
    parser.add_argument(
        "model", help="packaged name (smollm2-135m, whisper-tiny.en), HF model folder, .gguf file, or hub id"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weight dtype to load in")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the hub (off unless asked)"
    )


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--target/--ignore regexes that choose the prunable layers."""
    parser.add_argument(
        "--target", action="append", metavar="REGEX",
        help="prune layers whose name matches (repeatable); default: every Linear inside transformer blocks",
    )
    parser.add_argument("--ignore", action="append", metavar="REGEX", help="skip layers whose name matches (repeatable)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="magnitude-prune a model (uniform, global or N:M), no data needed",
        description="Prune the Linear layers of a model by weight magnitude and save it with its masks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of weights set to zero, in [0, 1) (default 0.5)")
    parser.add_argument("--scheme", choices=["uniform", "global"], default="uniform",
                        help="uniform: every layer at --sparsity; global: one magnitude threshold across layers")
    parser.add_argument("--nm", metavar="N:M", help="semi-structured: keep N of every M weights along the input (e.g. 2:4)")
    parser.add_argument("--override", action="append", default=[], metavar="REGEX=SPARSITY",
                        help="per-layer sparsity for layers matching REGEX (repeatable; first match wins)")
    add_target_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.models import load_model, load_tokenizer
    from sparseft.models.saving import save_model_folder
    from sparseft.prune import magnitude_prune, sparsity_report

    overrides = dict(parse_override(o) for o in args.override)
    model = load_model(args.model, args.dtype, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code, missing_ok=True)
    masks = magnitude_prune(
        model, args.sparsity, scheme=args.scheme, nm=args.nm, overrides=overrides, targets=args.target, ignore=args.ignore
    )
    report = sparsity_report(model, masks)
    print(report.format(max_rows=None if len(report.layers) <= 40 else 40))
    record = {"stage": "prune", "method": "magnitude", "source": str(args.model), "scheme": args.scheme,
              "nm": args.nm, "overrides": overrides, **report.as_dict()}
    save_model_folder(model, args.out, tokenizer=tokenizer, masks=masks, record=record)
    print(f"saved pruned model, masks and report to {args.out}")
    print(json.dumps({"total_sparsity": round(report.sparsity, 4)}))
    return 0
