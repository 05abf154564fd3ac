"""How much of each block's squared activation norm sits on one token: why SquareHead normalizes per token.

For `--windows` windows of `--seqlen` tokens from the austen train split, runs the dense model once and
reports per block: the largest single token's share of the block's total squared norm (the denominator of
a per-layer normalized MSE), and that token's mean square against the median token's. A share near 1 means
a per-layer denominator measures only that token's error. Results: experiments/results/attention_sinks.json.

    python experiments/attention_sinks.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparseft.data.calibration import calibration_batches
from sparseft.data.sources import load_texts
from sparseft.models import load_model, load_tokenizer

RESULTS = Path(__file__).parent / "results"


@torch.no_grad()
def sink_shares(model, batches: list[dict]) -> list[dict]:
    """Per hidden state (embeddings = 0, then each block): mean over windows of the top token's share."""
    rows: dict[int, list[tuple[float, float]]] = {}
    for batch in batches:
        states = model(**batch, output_hidden_states=True).hidden_states
        for layer, h in enumerate(states):
            power = h.float().pow(2).mean(-1)  # (batch, tokens): each token's mean square
            for p in power:
                rows.setdefault(layer, []).append((float(p.max() / p.sum()), float(p.max() / p.median())))
    return [{"layer": layer, "top_token_share": sum(s for s, _ in v) / len(v),
             "top_over_median": sum(r for _, r in v) / len(v)} for layer, v in rows.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    args = p.parse_args()
    model, tokenizer = load_model(args.model).eval(), load_tokenizer(args.model)
    texts = load_texts(["austen"], "train", seed=0)
    batches = calibration_batches(tokenizer, texts, args.windows, args.seqlen, batch_size=args.windows, seed=0)
    rows = sink_shares(model, batches)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "attention_sinks.json").write_text(json.dumps({"settings": vars(args), "layers": rows}, indent=2))
    for row in rows:
        print(f"layer {row['layer']:>2}: top token holds {row['top_token_share']:.3f} of the squared norm "
              f"({row['top_over_median']:.0f}x the median token)")


if __name__ == "__main__":
    main()
