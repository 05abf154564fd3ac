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
    parser.add_argument("--data", nargs="+", metavar="SOURCE",
                        help=f"test texts, each source reported on its own: {describe_sources()}; or .txt/.jsonl "
                             "files or folders (default: gsm austen, in-domain and out-of-domain)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per evaluation window (default 512)")
    parser.add_argument("--stride", type=int, help="sliding windows: score STRIDE new tokens per window, with the "
                                                   "rest of the window as context (default: back-to-back windows)")
    parser.add_argument("--max-texts", type=int, help="evaluate on the first N texts only")
    parser.add_argument("--tokenizer", help="where the tokenizer is, if not in MODEL (e.g. for a compressed checkpoint)")
    parser.add_argument("--gsm-accuracy", action="store_true",
                        help="also greedy-decode the held-out GSM problems and report exact match (slow)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per GSM problem (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from sparseft.settings import EvalSettings
    from sparseft.stages import run_eval

    settings = settings_from(EvalSettings, data=args.data, seqlen=args.seqlen, stride=args.stride,
                             max_texts=args.max_texts, tokenizer=args.tokenizer, progress=not args.json,
                             gsm_accuracy=args.gsm_accuracy, max_new_tokens=args.max_new_tokens)
    record = run_eval(settings, stage_io(args, None))
    if args.json:
        keys = ("model", "perplexity", "tokens", "texts", "sparsity", "gsm_exact_match")
        print(json.dumps({k: record[k] for k in keys if k in record}))
    else:
        scores = "   ".join(f"{s} {p:.3f}" for s, p in record["perplexity"].items())
        print(f"perplexity: {scores}   sparsity {record['sparsity']:.2%}")
    return 0
