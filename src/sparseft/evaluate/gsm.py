"""GSM exact match: greedy generation on held-out problems, final number compared with the answer's.

A worked answer ends in "#### <number>"; a generation counts as correct when the number after its
first "####" (or, lacking one, the last number it wrote before the next "Question:") equals the
reference, compared as numbers (commas and a trailing ".0" ignored).

    >>> result = gsm_exact_match(model, tokenizer, [p for p in gsm_problems() if ...], max_new_tokens=200)
    >>> result.accuracy, result.correct, result.total
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The answer a worked solution gives: after its first '####', else its last number (normalised)."""
    text = text.split("Question:")[0]
    marked = text.split("####", 1)
    candidates = _NUMBER.findall(marked[1]) if len(marked) == 2 else _NUMBER.findall(text)
    if not candidates:
        return None
    number = (candidates[0] if len(marked) == 2 else candidates[-1]).replace(",", "")
    return number[:-2] if number.endswith(".0") else number


@dataclass
class ExactMatch:
    correct: int = 0
    total: int = 0
    generations: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@torch.no_grad()
def gsm_exact_match(model, tokenizer, problems: Sequence, max_new_tokens: int = 200, progress: bool = False):
    """Greedy-decode each problem's prompt ("Question: ...\\nAnswer:") and score its final number."""
    result = ExactMatch()
    for problem in tqdm(problems, desc="gsm exact match", disable=not progress):
        ids = tokenizer(problem.prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        result.generations.append(text)
        predicted = final_number(text)
        result.correct += predicted is not None and predicted == final_number(problem.answer)
        result.total += 1
    return result
