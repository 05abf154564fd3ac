"""`sparseft eval`: perplexity on the test split of a data source, and the sparsity of the weights."""

from __future__ import annotations

import argparse

from sparseft.commands._common import add_model_arguments, settings_from, stage_io


def register(subparsers) -> None:
    from sparseft.data.sources import describe_sources

    parser = subparsers.add_parser(
        "eval",
        help="perplexity on held-out text, plus weight sparsity",
        description="Evaluate a causal LM: perplexity on the test split of --data (never seen in calibration "
        "or training) and the sparsity of its prunable layers.",
    )
    add_model_arguments(parser)
    parser.add_argument("--data", nargs="+", default=["gsm"], metavar="SOURCE",
                        help=f"test texts: {describe_sources()}; or .txt/.jsonl files or folders (default gsm)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per evaluation window (default 512)")
    parser.add_argument("--max-texts", type=int, help="evaluate on the first N texts only")
    parser.add_argument("--tokenizer", help="where the tokenizer is, if not in MODEL (e.g. for a compressed checkpoint)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from sparseft.settings import EvalSettings
    from sparseft.stages import run_eval

    settings = settings_from(EvalSettings, data=args.data, seqlen=args.seqlen, max_texts=args.max_texts,
                             tokenizer=args.tokenizer, progress=not args.json)
    record = run_eval(settings, stage_io(args, None))
    result = {k: record[k] for k in ("model", "perplexity", "sparsity", "texts")} | {"data": args.data}
    print(json.dumps(result) if args.json else f"perplexity {record['perplexity']:.3f}   sparsity {record['sparsity']:.2%}")
    return 0
