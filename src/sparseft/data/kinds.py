"""What a data source holds: texts (causal LMs), text pairs (seq2seq, e.g. T5) or speech (e.g. Whisper).

One place answers it for names and paths alike, so every stage can check that its data suits its model
before any work, and the settings can accept every named source.

    >>> source_kind("gsm"), source_kind("gsm-en-de"), source_kind("librivox")
    ('text', 'pairs', 'speech')
    >>> source_kind("pairs.tsv"), source_kind("clips/manifest.jsonl")
    ('pairs', 'speech')
"""

from __future__ import annotations

import json
from pathlib import Path

#: kind -> what a stage says the model needs, in errors.
KIND_NAMES = {"text": "texts", "pairs": "text pairs (source -> target)", "speech": "speech clips with transcripts"}


def first_record_has(path: Path, key: str) -> bool:
    """True when the first JSON record of the jsonl file `path` has `key`."""
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    return isinstance(record, dict) and key in record
    except (OSError, ValueError):
        return False
    return False


def named_sources() -> dict[str, str]:
    """Every named source -> its kind."""
    from sparseft.data.pairs import PAIR_SOURCES
    from sparseft.data.sources import SOURCES
    from sparseft.data.speech import SPEECH_SOURCES

    return {**dict.fromkeys(SOURCES, "text"), **dict.fromkeys(PAIR_SOURCES, "pairs"),
            **dict.fromkeys(SPEECH_SOURCES, "speech")}  # fmt: skip


def source_kind(source: str) -> str:
    """'text', 'pairs' or 'speech' for a named source or a path (files are judged by suffix and first record)."""
    from sparseft.data.pairs import PAIR_SUFFIXES, is_pair_file
    from sparseft.data.speech import is_speech_path

    named = named_sources()
    if source in named:
        return named[source]
    path = Path(source)
    if is_speech_path(path):
        return "speech"
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix in PAIR_SUFFIXES and p.is_file()]
        return "pairs" if files and all(is_pair_file(p) for p in files) else "text"
    return "pairs" if is_pair_file(path) else "text"
