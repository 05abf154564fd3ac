"""Text metrics: word error rate (own edit distance, English normalisation) and BLEU (sacrebleu).

Usage::

    from sparseft.evaluate.metrics import corpus_bleu, corpus_word_error_rate, word_error_rate

    word_error_rate("he was not an ill disposed young man", "He was not an ill-disposed young man.")  # 0.0
    corpus_word_error_rate(["a b c d"], ["a x c"]).wer       # (1 substitution + 1 deletion) / 4 = 0.5
    corpus_bleu(["the cat sat"], ["the cat sat"])            # 100.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sparseft.evaluate.normalize import normalize_text


def normalize_words(text: str, language: str = "en") -> list[str]:
    """`text` as normalised words of `language` (`sparseft.evaluate.normalize.normalize_text`: English
    rules for "en", the basic normaliser otherwise).

    Usage: ``normalize_words("Mr. Dashwood's!") == ["mister", "dashwood", "is"]``.
    """
    return normalize_text(text, language).split()


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

    With ``normalize`` (default) both texts are normalised English (case, punctuation, numbers,
    contractions); otherwise they are split on whitespace. With an empty reference the rate is
    undefined; we return the number of hypothesis words (0.0 when both are empty) so inserted words
    still count as errors.
    """
    ref_words, hyp_words = (normalize_words(ref), normalize_words(hyp)) if normalize else (ref.split(), hyp.split())
    if not ref_words:
        return float(len(hyp_words))
    return edit_distance(ref_words, hyp_words) / len(ref_words)


@dataclass(frozen=True)
class WordErrors:
    """Corpus WER: `errors` (edits summed over utterances) / `words` (reference words summed)."""

    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else float(self.errors > 0)


def corpus_word_error_rate(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True,
                           languages: Sequence[str] | None = None) -> WordErrors:
    """WER over a corpus, as jiwer and Whisper's papers report it: total edits / total reference words
    (not the mean of per-utterance rates, which would weigh a 3-word clip like a 30-word one).
    `languages`: each pair's language for normalisation (default English)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    languages = list(languages) if languages is not None else ["en"] * len(refs)
    if len(languages) != len(refs):
        raise ValueError(f"{len(refs)} references but {len(languages)} languages")

    def split(text: str, language: str) -> list[str]:
        return normalize_words(text, language) if normalize else text.split()

    pairs = [(split(r, lang), split(h, lang)) for r, h, lang in zip(refs, hyps, languages, strict=True)]
    return WordErrors(sum(edit_distance(r, h) for r, h in pairs), sum(len(r) for r, _ in pairs))


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of `hyps` against one reference each: sacrebleu's defaults (13a tokenizer,
    exponential smoothing), the score translation papers report."""
    import sacrebleu

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)
