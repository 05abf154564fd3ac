"""Seq2seq evaluation by greedy generation: speech -> WER, text pairs -> BLEU.

    >>> result = speech_wer(model, extractor, tokenizer, load_clips("librivox", "test"))
    >>> result.wer, result.transcripts[0]
    >>> bleu = translation_bleu(model, tokenizer, load_pairs("gsm-en-de", "test"))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from sparseft.data.examples import clip_features
from sparseft.data.pairs import TextPair
from sparseft.data.speech import SpeechClip
from sparseft.evaluate.metrics import corpus_bleu, corpus_word_error_rate
from sparseft.runtime.suppression import cached_suppression


class _BothLengthsFilter(logging.Filter):
    """Drops transformers' "Both `max_new_tokens` and `max_length` seem to have been set" warning: Whisper's
    generation config carries max_length (its decoder positions) and every greedy call here sets
    max_new_tokens, which wins as intended, so the warning came once per batch and said nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "seem to have been set" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_BothLengthsFilter())


@dataclass
class SpeechResult:
    """Corpus WER of `transcripts` against the clips' texts (both normalised)."""

    wer: float
    errors: int
    words: int
    transcripts: list[str] = field(default_factory=list)


@dataclass
class TranslationResult:
    bleu: float
    translations: list[str] = field(default_factory=list)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def decode_generated(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    """The texts of generated ids (special tokens dropped, outer spaces stripped)."""
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def transcribe_options(model, max_new_tokens: int = 200) -> dict[str, Any]:
    """`generate()` options of a greedy transcription: at most `max_new_tokens` tokens, fewer when the
    decoder has fewer positions (a few stay for Whisper's start tokens)."""
    limit = min(max_new_tokens, getattr(model.config, "max_target_positions", max_new_tokens) - 4)
    return {"max_new_tokens": max(1, limit), "do_sample": False, "num_beams": 1}


def language_options(model, language: str) -> dict[str, Any]:
    """`generate()` options that make a multilingual Whisper transcribe `language` (it would otherwise
    detect one); none for English-only models, which have no language tokens."""
    if getattr(getattr(model, "generation_config", None), "is_multilingual", False):
        return {"language": language, "task": "transcribe"}
    return {}


@torch.no_grad()
def transcribe(model, extractor: Any, tokenizer: Any, clips: Sequence[SpeechClip], batch_size: int = 8,
               max_new_tokens: int = 200, progress: bool = False) -> list[str]:
    """Greedy transcripts of `clips` (the model's own generation config: suppressions; a multilingual
    model is told each clip's language). A batch holds clips of one language."""
    out: list[str] = []
    options = transcribe_options(model, max_new_tokens)
    batches, start = [], 0
    while start < len(clips):
        end = start + 1
        while end < len(clips) and end - start < batch_size and clips[end].language == clips[start].language:
            end += 1
        batches.append(clips[start:end])
        start = end
    with cached_suppression(model) as processors:  # the same tokens, without a vocabulary-wide isin per step
        for batch in tqdm(batches, desc="transcribe", disable=not progress):
            features = clip_features(extractor, batch).to(_device(model), model.dtype)
            ids = model.generate(input_features=features, logits_processor=processors, **options,
                                 **language_options(model, batch[0].language))
            out += decode_generated(tokenizer, ids)
    return out


def speech_wer(model, extractor: Any, tokenizer: Any, clips: Sequence[SpeechClip], batch_size: int = 8,
               max_new_tokens: int = 200, progress: bool = False) -> SpeechResult:
    """Transcribe `clips` and score the corpus WER against their transcripts (normalised per language)."""
    transcripts = transcribe(model, extractor, tokenizer, clips, batch_size, max_new_tokens, progress)
    errors = corpus_word_error_rate([c.text for c in clips], transcripts, languages=[c.language for c in clips])
    return SpeechResult(errors.wer, errors.errors, errors.words, transcripts)


@torch.no_grad()
def translate(model, tokenizer: Any, sources: Sequence[str], batch_size: int = 8, max_new_tokens: int = 200,
              progress: bool = False) -> list[str]:
    """Greedy outputs of a text seq2seq model for `sources` (padded on the right, with attention masks)."""
    from sparseft.data.examples import pad_id

    out: list[str] = []
    pad = pad_id(tokenizer, model.config)
    for start in tqdm(range(0, len(sources), batch_size), desc="translate", disable=not progress):
        rows = [torch.tensor(tokenizer(s).input_ids, dtype=torch.long) for s in sources[start : start + batch_size]]
        ids = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        generated = model.generate(input_ids=ids.to(_device(model)), attention_mask=mask.to(_device(model)),
                                   max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out += decode_generated(tokenizer, generated)
    return out


def translation_bleu(model, tokenizer: Any, pairs: Sequence[TextPair], batch_size: int = 8,
                     max_new_tokens: int = 200, progress: bool = False) -> TranslationResult:
    """Translate the pairs' sources and score corpus BLEU against their targets."""
    translations = translate(model, tokenizer, [p.source for p in pairs], batch_size, max_new_tokens, progress)
    return TranslationResult(corpus_bleu(translations, [p.target for p in pairs]), translations)
