"""Tiny seq2seq fixtures built offline: a Whisper processor (byte-level Whisper tokenizer + a feature
extractor shaped for the tiny config), tiny Whisper / T5 folders, wav clips and text pairs on disk.

Import as `from seq2seq_helpers import ...` (tests/ is on sys.path through the root conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tiny_models import build_tiny_model, byte_tokenizer

SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")
EOT, SOT, NO_TIMESTAMPS = 256, 257, 258
VOCAB = 260


def whisper_tokenizer(folder: Path):
    """A WhisperTokenizer over the 256 byte symbols (no merges) plus Whisper's special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import WhisperTokenizer

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({token: len(vocab) + i for i, token in enumerate(SPECIALS)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                           bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    return tok


def tiny_whisper(folder: Path, seed: int = 0, processor: bool = True):
    """A tiny random Whisper saved in `folder` with a processor (or only a byte tokenizer)."""
    from transformers import WhisperProcessor

    from sparseft.data.examples import feature_extractor_for

    model = build_tiny_model("whisper", seed=seed, vocab_size=VOCAB, pad_token_id=EOT, bos_token_id=EOT,
                             eos_token_id=EOT, decoder_start_token_id=SOT)
    model.generation_config.begin_suppress_tokens = None  # Whisper's defaults name ids of the real vocabulary
    model.generation_config.suppress_tokens = None
    model.save_pretrained(folder)
    if processor:
        tok = whisper_tokenizer(folder / "tok")
        WhisperProcessor(feature_extractor=feature_extractor_for(model.config), tokenizer=tok).save_pretrained(folder)
    else:
        byte_tokenizer().save_pretrained(folder)
    return model


def tiny_t5(folder: Path, seed: int = 0):
    """A tiny random T5 saved in `folder` with a byte tokenizer that has a pad token (id 258 = start)."""
    tok = byte_tokenizer()
    tok.add_special_tokens({"pad_token": "<pad>"})
    model = build_tiny_model("t5", seed=seed, vocab_size=VOCAB, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    model.generation_config.decoder_start_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def write_clips(folder: Path, texts: list[str], rate: int = 16000, seconds: float = 0.5, split: str = "train") -> Path:
    """Noise-and-tone wav clips with `texts` as transcripts, listed in folder/SPLIT.jsonl."""
    from sparseft.data.audio import write_wav

    rng = np.random.default_rng(len(texts))
    lines = []
    for i, text in enumerate(texts):
        t = np.arange(int(rate * seconds)) / rate
        samples = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(len(t))
        write_wav(folder / "wav" / f"{split}-{i}.wav", samples.astype(np.float32), rate)
        lines.append(json.dumps({"audio": f"wav/{split}-{i}.wav", "text": text}))
    (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in pairs))
    return path


SPEECH_TEXTS = ["one two three", "the cat sat", "a dog ran far", "red and blue", "open the door", "see you soon"]
PAIRS = [("one cat", "eine Katze"), ("two dogs", "zwei Hunde"), ("the house", "das Haus"), ("a tree", "ein Baum"),
         ("red car", "rotes Auto"), ("good day", "guten Tag")]
