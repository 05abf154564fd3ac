"""Tokenized causal-LM training data: texts -> fixed-length examples with labels.

Two layouts:
- `pack=True`: all texts joined with EOS and cut into windows of `seqlen` tokens; no padding, every token
  trains (the cheapest use of compute for LM fine-tuning).
- `pack=False`: one example per text, truncated to `seqlen`; `pad_collate` pads each batch to its longest
  example, with attention_mask 0 and labels -100 on padding (SquareHead and CE skip those positions).

>>> train = CausalLMTexts(tokenizer, load_texts("gsm", "train", n=512), seqlen=256)
>>> trainer = SparseTrainer(..., train_dataset=train, data_collator=pad_collate(tokenizer.pad_token_id))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from sparseft.errors import ConfigError


def _token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


class CausalLMTexts(Dataset):
    """Examples {input_ids, attention_mask, labels} (1-D long tensors) for causal LM training."""

    def __init__(self, tokenizer, texts: Sequence[str], seqlen: int = 256, pack: bool = True):
        if seqlen < 2:
            raise ConfigError(f"seqlen must be >= 2 tokens, got {seqlen}")
        if not texts:
            raise ConfigError("no training texts")
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = [t + eos for t in _token_ids(tokenizer, texts)]
        if pack:
            stream = [tok for text in ids for tok in text]
            # The last partial window is dropped so that every example has the same length.
            self.examples = [stream[i : i + seqlen] for i in range(0, len(stream) - seqlen + 1, seqlen)]
            if not self.examples:
                raise ConfigError(f"texts hold {len(stream)} tokens, fewer than one window of {seqlen}")
        else:
            self.examples = [t[:seqlen] for t in ids]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.examples[index], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def pad_collate(pad_token_id: int | None) -> Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
    """A collator padding (on the right) to the batch's longest example; labels -100 on padding."""
    pad_id = 0 if pad_token_id is None else pad_token_id

    def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        batch = {
            "input_ids": torch.full((len(examples), width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
            "labels": torch.full((len(examples), width), -100, dtype=torch.long),
        }
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            for key in batch:
                batch[key][row, :n] = e[key]
        return batch

    return collate
