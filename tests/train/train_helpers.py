"""Small fixtures for trainer tests: a random-token dataset and TrainingArguments sized for CPU tests."""

from __future__ import annotations

import torch
from transformers import TrainingArguments


class RandomTokens(torch.utils.data.Dataset):
    """`n` causal-LM examples of `length` random tokens; the last `pad` tokens of odd rows are padding."""

    def __init__(self, n: int = 16, length: int = 16, vocab: int = 128, pad: int = 0):
        self.n, self.length, self.vocab, self.pad = n, length, vocab, pad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, self.vocab, (self.length,), generator=torch.Generator().manual_seed(i))
        attention = torch.ones_like(ids)
        labels = ids.clone()
        if self.pad and i % 2:
            attention[-self.pad :] = 0
            labels[-self.pad :] = -100
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def tiny_args(out_dir, max_steps: int = 4, cls: type = TrainingArguments, **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=5e-3,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        weight_decay=0.1,  # decoupled weight decay would revive nothing, but must not un-zero anything either
    )
    settings.update(overrides)
    return cls(**settings)
