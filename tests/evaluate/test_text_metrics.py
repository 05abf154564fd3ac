"""WER normalisation as users expect it (Whisper's English rules, numbers as words), WER against edit
distances counted by hand, BLEU against the formula worked by hand."""

import math

import pytest

from sparseft.evaluate.metrics import corpus_bleu, corpus_word_error_rate, edit_distance, word_error_rate
from sparseft.evaluate.normalize import normalize_english, number_to_words, ordinal_words


@pytest.mark.parametrize("text,want", [
    ("He was not an ill-disposed young man.", "he was not an ill disposed young man"),
    ("And Mr. John Dashwood had then leisure", "and mister john dashwood had then leisure"),
    ("10 of clubs.", "ten of clubs"),
    ("4. Queen of Clubs", "four queen of clubs"),
    ("It cost $1,250, i.e. 3.5% more.", "it cost one thousand two hundred fifty dollars i e three point five percent more"),
    ("They're here; won't you come? I'd say we've seen it.", "they are here will not you come i would say we have seen it"),
    ("Um, the colour [inaudible] was grey (mostly)", "the color was gray"),
    ("On the 21st and 12th of May", "on the twenty first and twelfth of may"),
    ("Café naïve", "cafe naive"),
    ("She's been there; he's gone", "she has been there he has gone"),
])  # fmt: skip
def test_normalize_english(text, want):
    assert normalize_english(text) == want


def test_numbers_as_words():
    assert number_to_words(0) == "zero" and number_to_words(15) == "fifteen" and number_to_words(40) == "forty"
    assert number_to_words(101) == "one hundred one"
    assert number_to_words(2_000_019) == "two million nineteen"
    assert ordinal_words(3) == "third" and ordinal_words(20) == "twentieth" and ordinal_words(101) == "one hundred first"


def test_word_error_rate_against_hand_counts():
    # ref: a b c d e (5 words); hyp: a x c e f -> b->x substituted, d deleted, f inserted: 3 edits
    assert edit_distance("a b c d e".split(), "a x c e f".split()) == 3
    assert word_error_rate("a b c d e", "a x c e f") == pytest.approx(3 / 5)
    assert word_error_rate("ten of clubs", "10 of Clubs!") == 0.0  # normalised on both sides
    # corpus WER = total edits / total reference words, not the mean of per-clip rates:
    # clip 1: 1 edit of 2 words, clip 2: 0 of 8 -> 1 / 10 (the mean of rates would be 0.25)
    result = corpus_word_error_rate(["five five", "eight of spades four of clubs seven of"],
                                    ["five", "eight of spades four of clubs seven of"])
    assert (result.errors, result.words, result.wer) == (1, 10, 0.1)


def test_bleu_against_the_formula_by_hand():
    # 7 words each, only the last differs: n-gram precisions 6/7, 5/6, 4/5, 3/4; no brevity penalty
    hyp, ref = "the cat sat on the mat today", "the cat sat on the mat yesterday"
    by_hand = 100 * math.exp(sum(math.log(p) for p in (6 / 7, 5 / 6, 4 / 5, 3 / 4)) / 4)
    assert corpus_bleu([hyp], [ref]) == pytest.approx(by_hand, abs=1e-6)
    assert corpus_bleu([ref], [ref]) == pytest.approx(100.0)
    # a shorter hypothesis pays the brevity penalty exp(1 - r/c): r = 7, c = 6, all n-grams match
    assert corpus_bleu(["the cat sat on the mat"], [ref]) == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-6)
