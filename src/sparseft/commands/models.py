"""`sparseft models`: list the packaged models (no hub needed) and prepare their cached HF folders."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list packaged models; --prepare converts one into its cached HF folder",
        description="Models that ship inside PyPI packages and load with no network.",
    )
    parser.add_argument("--prepare", metavar="NAME", action="append", default=[], help="convert NAME now (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.models.registry import PACKAGED_MODELS, packaged_model_dir

    for name in args.prepare:
        print(f"{name}: {packaged_model_dir(name)}")
    if not args.prepare:
        for entry in PACKAGED_MODELS.values():
            print(f"{entry.name:<18} {entry.description}  [pip: {entry.pip_spec}]")
    return 0
