"""Text metrics that need no extra dependencies.

Usage::

    from sparseft.evaluate.metrics import word_error_rate

    word_error_rate("he was not an ill disposed young man", "He was not an ill-disposed young man.")  # 0.0
"""

from __future__ import annotations

import re

# Keep letters, digits and apostrophes (don't, o'clock); everything else separates words,
# so "ill-disposed." and "ill disposed" compare equal.
_NON_WORD = re.compile(r"[^\w']+|_")


def normalize_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words, dropping punctuation.

    Usage: ``normalize_words("Mr. Dashwood's!") == ["mr", "dashwood's"]``.
    """
    return [w.strip("'") for w in _NON_WORD.split(text.lower()) if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token lists (substitution, insertion, deletion cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i]
        for j, h in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def word_error_rate(ref: str, hyp: str, normalize: bool = True) -> float:
    """Word error rate: word-level edit distance divided by the number of reference words.

    With ``normalize`` (default) case and punctuation are ignored; otherwise texts are split
    on whitespace. With an empty reference the rate is undefined; we return the number of
    hypothesis words (0.0 when both are empty) so inserted words still count as errors.
    """
    split = normalize_words if normalize else str.split
    ref_words, hyp_words = split(ref), split(hyp)
    if not ref_words:
        return float(len(hyp_words))
    return edit_distance(ref_words, hyp_words) / len(ref_words)
