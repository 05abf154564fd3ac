"""GSM exact match: the final-number parser, and greedy generation scored end to end on a real model."""

from dataclasses import dataclass

import torch

from sparseft.evaluate.gsm import final_number, gsm_exact_match
from tiny_models import build_tiny_model, byte_tokenizer


def test_final_number_follows_the_marker_then_the_last_number():
    assert final_number("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert final_number("#### 1,234.0 dollars") == "1234"
    assert final_number("so 12 then 15") == "15"
    assert final_number("#### 5\nQuestion: another with 9") == "5"
    assert final_number("It is 8.\nQuestion: and 99") == "8"
    assert final_number("no digits here") is None
    assert final_number("#### -3.5") == "-3.5"


@dataclass
class Problem:
    question: str
    answer: str

    @property
    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"


def test_exact_match_scores_what_the_model_generates():
    model = build_tiny_model("llama", vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    tok = byte_tokenizer()
    # A head that always prefers the byte "4": every greedy step writes it, whatever the prompt.
    head = torch.nn.Linear(32, 260)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("4")] = 10.0
    model.lm_head = head
    problems = [Problem("2 + 2?", "2 + 2 = 4.\n#### 4444"), Problem("3 + 3?", "#### 6"), Problem("x?", "#### 4,444")]
    result = gsm_exact_match(model, tok, problems, max_new_tokens=4)
    assert result.generations == ["4444"] * 3
    assert (result.correct, result.total) == (2, 3) and abs(result.accuracy - 2 / 3) < 1e-9
