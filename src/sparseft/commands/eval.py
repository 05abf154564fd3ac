"""`sparseft eval`: held-out perplexity of a causal LM and the sparsity of its weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparseft.commands.prune import add_model_arguments


def heldout_texts(source: str) -> list[str]:
    """'gsm' (the 100 original GSM problems with worked answers), 'fortunes', or text files (one text each)."""
    from sparseft.data import fortunes, gsm_problems

    if source == "gsm":
        return [p.text for p in gsm_problems()]
    if source == "fortunes":
        return fortunes(max_items=400)
    from sparseft.errors import ConfigError

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"--data must be 'gsm', 'fortunes' or an existing text file/folder, got {source!r}")
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    return [f.read_text() for f in files]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="perplexity on held-out text, plus weight sparsity",
        description="Evaluate a causal LM: perplexity on held-out texts and the sparsity of its prunable layers.",
    )
    add_model_arguments(parser)
    parser.add_argument("--data", default="gsm", help="gsm (default), fortunes, or a .txt file / folder of .txt files")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per evaluation window (default 512)")
    parser.add_argument("--tokenizer", help="where the tokenizer is, if not in MODEL (e.g. for a compressed checkpoint)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.evaluate.sparsity import weight_sparsity
    from sparseft.models import load_model, load_tokenizer

    model = load_model(args.model, args.dtype, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code, missing_ok=bool(args.tokenizer))
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    ppl = perplexity(model, tokenizer, heldout_texts(args.data), seqlen=args.seqlen, progress=not args.json)
    sparsity = weight_sparsity(model)
    result = {"model": str(args.model), "data": args.data, "perplexity": ppl, "sparsity": sparsity}
    print(json.dumps(result) if args.json else f"perplexity {ppl:.3f}   sparsity {sparsity:.2%}")
    return 0
