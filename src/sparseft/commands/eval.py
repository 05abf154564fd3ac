"""`sparseft eval`: the model kind's metric (perplexity, WER, BLEU) on test splits, and weight sparsity."""

from __future__ import annotations

import argparse

from sparseft.commands._common import add_model_arguments, settings_from, stage_io

EPILOG = """examples:
  sparseft eval smollm2-135m                                 # perplexity on gsm and austen (test splits)
  sparseft eval whisper-tiny.en --data librivox cards        # normalised WER of greedy transcripts
  sparseft eval runs/whisper-sgpt50 --data espeak            # synthetic clips of the text sources' test texts
  sparseft eval runs/t5-sparse --data gsm-en-de              # BLEU (sacrebleu) of greedy outputs

WER: both sides normalised like Whisper's English normaliser (case, punctuation, contractions,
titles, British spellings), numbers written as words; total edits / total reference words."""


def register(subparsers) -> None:
    from sparseft.data.sources import describe_sources

    parser = subparsers.add_parser(
        "eval",
        help="perplexity (causal LM), WER (speech) or BLEU (seq2seq) on held-out data, plus weight sparsity",
        description="Evaluate a model on the test split of --data (never seen in calibration or training) with "
        "its kind's metric: perplexity for causal LMs, normalised word error rate of greedy transcripts for "
        "speech models (Whisper), BLEU of greedy outputs for text seq2seq models (T5); and the sparsity of "
        "its prunable layers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--data", nargs="+", metavar="SOURCE",
                        help=f"test data, each source reported on its own: {describe_sources()}; or files or "
                             "folders (default: gsm austen for causal LMs, librivox cards for speech, gsm-en-de "
                             "for seq2seq)")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per evaluation window (default 512)")
    parser.add_argument("--stride", type=int, help="sliding windows: score STRIDE new tokens per window, with the "
                                                   "rest of the window as context (default: back-to-back windows)")
    parser.add_argument("--max-texts", type=int, help="evaluate on the first N texts, clips or pairs only")
    parser.add_argument("--tokenizer", help="where the tokenizer is, if not in MODEL (e.g. for a compressed checkpoint)")
    parser.add_argument("--gsm-accuracy", action="store_true",
                        help="also greedy-decode the held-out GSM problems and report exact match (slow)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="tokens generated per GSM problem, clip or pair (default 200)")
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
    metric = record["metric"]
    if args.json:
        keys = ("model", "metric", metric, "tokens", "texts", "words", "clips", "pairs", "sparsity", "gsm_exact_match")
        print(json.dumps({k: record[k] for k in keys if k in record}))
    else:
        shown = {"wer": lambda v: f"{100 * v:.2f}%", "bleu": lambda v: f"{v:.2f}"}.get(metric, lambda v: f"{v:.3f}")
        scores = "   ".join(f"{s} {shown(v)}" for s, v in record[metric].items())
        print(f"{metric}: {scores}   sparsity {record['sparsity']:.2%}")
    return 0
