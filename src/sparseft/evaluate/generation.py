"""Seq2seq evaluation by greedy generation: speech -> WER, text pairs -> BLEU.

    >>> result = speech_wer(model, extractor, tokenizer, load_clips("librivox", "test"))
    >>> result.wer, result.transcripts[0]
    >>> bleu = translation_bleu(model, tokenizer, load_pairs("gsm-en-de", "test"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from sparseft.data.examples import clip_features
from sparseft.data.pairs import TextPair
from sparseft.data.speech import SpeechClip
from sparseft.evaluate.metrics import corpus_bleu, corpus_word_error_rate


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


@torch.no_grad()
def transcribe(model, extractor: Any, tokenizer: Any, clips: Sequence[SpeechClip], batch_size: int = 8,
               max_new_tokens: int = 200, progress: bool = False) -> list[str]:
    """Greedy transcripts of `clips` (the model's own generation config: language, task, suppressions)."""
    out: list[str] = []
    options = transcribe_options(model, max_new_tokens)
    for start in tqdm(range(0, len(clips), batch_size), desc="transcribe", disable=not progress):
        features = clip_features(extractor, clips[start : start + batch_size]).to(_device(model), model.dtype)
        out += decode_generated(tokenizer, model.generate(input_features=features, **options))
    return out


def speech_wer(model, extractor: Any, tokenizer: Any, clips: Sequence[SpeechClip], batch_size: int = 8,
               max_new_tokens: int = 200, progress: bool = False) -> SpeechResult:
    """Transcribe `clips` and score the corpus WER against their transcripts."""
    transcripts = transcribe(model, extractor, tokenizer, clips, batch_size, max_new_tokens, progress)
    errors = corpus_word_error_rate([c.text for c in clips], transcripts)
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
