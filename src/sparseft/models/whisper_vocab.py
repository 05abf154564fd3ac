"""Whisper's special tokens (English-only and multilingual vocabularies) and the generation config they imply.

OpenAI's tokenizer lays the special tokens out after the BPE tokens in a fixed order, so the vocabulary
size alone gives every id: ``<|endoftext|>``, ``<|startoftranscript|>``, one token per language (``<|en|>``,
``<|zh|>``, ... in `LANGUAGES` order), ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``,
``<|startofprev|>``, ``<|nospeech|>``, ``<|notimestamps|>``, then 1501 timestamps ``<|0.00|>``..``<|30.00|>``.
English-only models (tiny.en ... medium.en: 51864 tokens) have one BPE token fewer; large-v3 has 100
languages (51866 tokens).

    >>> vocab = whisper_vocab(51865)                        # Whisper tiny ... large-v2 (99 languages)
    >>> vocab.sot, vocab.lang_to_id["<|de|>"], vocab.task_to_id["translate"], vocab.no_timestamps
    (50258, 50261, 50358, 50363)
    >>> gen = whisper_generation_config(vocab, max_length=448, hints=ct2_config)
    >>> model.generate(features, generation_config=gen, language="de", task="translate")
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GenerationConfig
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from sparseft.errors import ModelError

EN_VOCAB_SIZE = 51864  # tiny.en ... medium.en
_BPE_TOKENS = 50256  # byte-level BPE tokens shared by every Whisper (plus one more in multilingual ones)
_SPECIALS_WITHOUT_LANGUAGES = 51765 - _BPE_TOKENS  # eot, sot, tasks, lm, prev, nospeech, notimestamps, stamps
# Fallbacks for when CTranslate2's config.json lacks them (the values of openai/whisper-tiny.en).
_TINY_EN_ALIGNMENT_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
_SPACE = 220  # "Ġ": never the first token of a transcript
_FORMER_CODES = {"he": "iw"}  # Hebrew's token in tokenizers converted before OpenAI renamed it


@dataclass(frozen=True)
class WhisperVocab:
    """The ids of a Whisper vocabulary's special tokens (see the module doc)."""

    size: int

    @property
    def multilingual(self) -> bool:
        return self.size > EN_VOCAB_SIZE

    @property
    def eot(self) -> int:
        return _BPE_TOKENS + int(self.multilingual)

    @property
    def sot(self) -> int:
        return self.eot + 1

    @property
    def languages(self) -> list[str]:
        """Language codes in token order: ``en``, ``zh``, ``de``, ..."""
        return list(LANGUAGES)[: self.size - _BPE_TOKENS - int(self.multilingual) - _SPECIALS_WITHOUT_LANGUAGES]

    @property
    def lang_to_id(self) -> dict[str, int]:
        return {f"<|{code}|>": self.sot + 1 + i for i, code in enumerate(self.languages)}

    @property
    def task_to_id(self) -> dict[str, int]:
        translate = self.sot + 1 + len(self.languages)
        return {"translate": translate, "transcribe": translate + 1}

    @property
    def prev_sot(self) -> int:
        return self.task_to_id["transcribe"] + 2  # after <|startoflm|>

    @property
    def no_timestamps(self) -> int:
        return self.prev_sot + 2  # after <|nospeech|>

    def special_tokens(self) -> dict[int, tuple[str, ...]]:
        """id -> the texts its token may have, for every special token but the timestamps (to check a
        tokenizer against); older tokenizers spell a few languages by their former codes (``<|iw|>``)."""
        tasks = {i: (f"<|{task}|>",) for task, i in self.task_to_id.items()}
        languages = {i: (t, f"<|{_FORMER_CODES.get(t[2:-2])}|>") for t, i in self.lang_to_id.items()}
        return {self.eot: ("<|endoftext|>",), self.sot: ("<|startoftranscript|>",), **languages, **tasks,
                self.prev_sot: ("<|startofprev|>",), self.no_timestamps: ("<|notimestamps|>",)}  # fmt: skip


def whisper_vocab(size: int) -> WhisperVocab:
    """The layout of a ``size``-token Whisper vocabulary; ModelError for a size no Whisper has."""
    vocab = WhisperVocab(int(size))
    n_languages = size - _BPE_TOKENS - int(vocab.multilingual) - _SPECIALS_WITHOUT_LANGUAGES
    if size < EN_VOCAB_SIZE or n_languages > len(LANGUAGES):
        raise ModelError(
            f"a {size}-token vocabulary is not a Whisper one: expected {EN_VOCAB_SIZE} (English-only, e.g. "
            f"tiny.en), 51865 (multilingual tiny ... large-v2) or 51866 (large-v3)"
        )
    return vocab


def check_tokenizer(vocab: WhisperVocab, tokenizer) -> None:
    """ModelError unless ``tokenizer`` has every special token of ``vocab`` at its id."""
    specials = vocab.special_tokens()
    found = {i: tokenizer.convert_ids_to_tokens(i) for i in specials}
    wrong = {i: t for i, t in found.items() if t not in specials[i]}
    if wrong:
        shown = ", ".join(f"{i}: {t!r} (expected {specials[i][0]})" for i, t in list(wrong.items())[:3])
        raise ModelError(f"the tokenizer's special tokens are not Whisper's {vocab.size}-token layout: {shown}")


def whisper_generation_config(vocab: WhisperVocab, max_length: int, hints: dict) -> GenerationConfig:
    """Greedy Whisper decoding without timestamps: ``<|startoftranscript|>`` (then, multilingual, the
    language, detected unless ``generate(language=...)`` names it, and the task, ``transcribe`` unless
    ``task="translate"``) ``<|notimestamps|>`` ... ``<|endoftext|>``.

    ``hints``: CTranslate2's config.json (suppress_ids, suppress_ids_begin, alignment_heads)."""
    multilingual = {"lang_to_id": vocab.lang_to_id, "task_to_id": vocab.task_to_id} if vocab.multilingual else {}
    return GenerationConfig(
        decoder_start_token_id=vocab.sot,
        bos_token_id=vocab.sot,
        eos_token_id=vocab.eot,
        pad_token_id=vocab.eot,
        no_timestamps_token_id=vocab.no_timestamps,
        prev_sot_token_id=vocab.prev_sot,
        is_multilingual=vocab.multilingual,
        return_timestamps=False,
        max_initial_timestamp_index=50,
        max_length=max_length,
        suppress_tokens=list(hints.get("suppress_ids", [])),
        begin_suppress_tokens=list(hints.get("suppress_ids_begin", [_SPACE, vocab.eot])),
        alignment_heads=[list(h) for h in hints.get("alignment_heads", _TINY_EN_ALIGNMENT_HEADS)],
        **multilingual,
    )
