"""`sparseft prune`: data-free magnitude pruning (uniform, global or N:M) of any HF model."""

from __future__ import annotations

import argparse

from sparseft.commands._common import (
    add_model_arguments,
    add_output_arguments,
    add_target_arguments,
    print_summary,
    settings_from,
    stage_io,
)
from sparseft.errors import ConfigError

EPILOG = """examples:
  sparseft prune smollm2-135m --sparsity 0.5 --out runs/smollm2-mag50
  sparseft prune smollm2-135m --nm 2:4 --out runs/smollm2-2of4
  sparseft prune ./my-model --sparsity 0.7 --scheme global --ignore 'down_proj$' --out runs/g70
  sparseft prune ./my-model --sparsity 0.5 --override 'mlp\\.down_proj=0.3' --out runs/mixed

The output folder is a normal HF model folder (safetensors) plus masks.safetensors and stage.json
(the settings and per-layer sparsity). For pruning with calibration data (SparseGPT, Wanda) use `sparseft oneshot`."""


def parse_override(text: str) -> tuple[str, float]:
    """'REGEX=SPARSITY' -> (regex, sparsity)."""
    pattern, sep, value = text.rpartition("=")
    try:
        if not sep or not pattern:
            raise ValueError
        return pattern, float(value)
    except ValueError:
        raise ConfigError(f"--override must look like 'REGEX=SPARSITY' (e.g. 'down_proj=0.3'), got {text!r}") from None


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
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import PruneSettings
    from sparseft.stages import run_prune

    overrides = dict(parse_override(o) for o in args.override)
    settings = settings_from(PruneSettings, sparsity=args.sparsity, scheme=args.scheme, nm=args.nm,
                             overrides=overrides, targets=args.target, ignore=args.ignore)
    record = run_prune(settings, stage_io(args, args.out))
    print(f"saved pruned model, masks and report to {args.out}")
    print_summary(record, ("total_sparsity",))
    return 0
