"""Every text a stage reads comes from here: named sources with disjoint splits, or the user's files.

A source is a name or a path; `load_texts(source, split)` returns its texts for one split:

- ``train`` (fine-tuning) and ``calibration`` (one-shot pruning, quantization scales, GPTQ),
- ``test`` (evaluation), which never shares a text with the other two.

Named sources (``SOURCES``):

| name       | domain              | train / calibration                           | test                                  |
|------------|---------------------|-----------------------------------------------|---------------------------------------|
| `gsm`      | math word problems  | variants generated from 74 of the 100 GSM templates | the originals of the other 26 templates |
| `austen`   | general English     | five Jane Austen novels (Debian r-cran-janeaustenr) | *Persuasion*, by paragraph          |
| `fortunes` | short English texts | Debian `fortunes` entries whose hash is not 0 mod 5 | the other fifth                    |

Splits are fixed by construction (template id, novel, content hash): no setting moves a text across.

Files are the user's to split (name a different file for each split): ``.txt`` holds texts separated
by blank lines, ``.jsonl`` one JSON object with a "text" field per line; a folder means every .txt and
.jsonl file inside, in name order. Several sources can be given at once (a list); their texts are
interleaved, so the first `n` of them mix every source.

Seq2seq and speech models read text pairs (`sparseft.data.pairs.load_pairs`: `gsm-en-de`, .tsv) and
speech clips (`sparseft.data.speech.load_clips`: `espeak`, `librivox`, `cards`, audio manifests) the same
way, with the same splits; `sparseft.data.kinds.source_kind` tells which a source holds.

    >>> calib = load_texts("gsm", "calibration", n=600)
    >>> heldout = load_texts("gsm", "test")               # the 100 originals
    >>> mine = load_texts(["notes.txt", "more.jsonl"], "train")
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

from sparseft.errors import ConfigError, SparseftError

SPLITS = ("train", "calibration", "test")
FILE_SUFFIXES = (".txt", ".jsonl")
#: Some GSM templates enumerate huge value spaces (over a minute per problem); each gets this budget.
TEMPLATE_SECONDS = 1.0
#: Texts a named source gives for train/calibration when the caller does not say how many.
DEFAULT_COUNT = 600


@dataclass(frozen=True)
class NamedSource:
    """A packaged corpus: `texts(split, n, seed)` -> its texts of that split (n: at most / how many)."""

    name: str
    description: str
    texts: Callable[[str, int | None, int], list[str]]


def _gsm(split: str, n: int | None, seed: int) -> list[str]:
    from sparseft.data.texts import gsm_problems, gsm_template_split, gsm_variants

    if split == "test":
        return [p.text for p in gsm_problems() if gsm_template_split(p.id_orig) == "test"][:n]
    count = n or DEFAULT_COUNT
    texts = [p.text for p in gsm_variants(count, seed, seconds_per_template=TEMPLATE_SECONDS, split="train")]
    if not texts:
        raise SparseftError("no GSM variant could be generated; use fortunes or a text file")
    return texts


def _fortunes(split: str, n: int | None, seed: int) -> list[str]:
    from sparseft.data.texts import fortunes

    # A content hash, not a position, decides the split: stable across package versions and orderings.
    want_test = split == "test"
    return [t for t in fortunes() if (zlib.crc32(t.encode()) % 5 == 0) == want_test][:n]


AUSTEN_TEST_NOVELS = ("persuasion",)


def _austen(split: str, n: int | None, seed: int) -> list[str]:
    from sparseft.data.austen import austen_novels, paragraphs

    novels = austen_novels()
    by_split = {
        part: [p for name in sorted(novels) if (name in AUSTEN_TEST_NOVELS) == (part == "test")
               for p in paragraphs(novels[name])]
        for part in ("train", "test")
    }  # fmt: skip
    if split == "test":  # headings ("CHAPTER I", "THE END") recur across novels: keep them on the train side
        seen = set(by_split["train"])
        return [p for p in by_split["test"] if p not in seen][:n]
    texts = by_split["train"]
    if n is not None:  # a spread over all five novels, not the start of the first
        texts = random.Random(seed).sample(texts, min(n, len(texts)))
    return texts[:n]


SOURCES: dict[str, NamedSource] = {
    s.name: s
    for s in [
        NamedSource("gsm", "GSM math problems: variants of 74 templates to train, originals of 26 others to test", _gsm),
        NamedSource("austen", "Jane Austen's novels: five to train, Persuasion to test (out of domain for gsm)", _austen),
        NamedSource("fortunes", "short English texts (Debian fortunes), split 4:1 by content hash", _fortunes),
    ]
}


def load_texts(source: str | Sequence[str], split: str, n: int | None = None, seed: int = 0) -> list[str]:
    """Texts of `source` (a name, a path, or a list of them) for `split`; at most `n` of them.

    Raises ConfigError naming what is accepted when a source is unknown, unreadable or empty."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    items = [source] if isinstance(source, str) else list(source)
    if not items:
        raise ConfigError("no data source given")
    per_source = [SOURCES[i].texts(split, n, seed) if i in SOURCES else _path_texts(Path(i)) for i in items]
    # Several sources mix evenly (round robin), so that `n` texts never come from the first source alone.
    texts = [t for group in zip_longest(*per_source) for t in group if t is not None]
    if not texts:
        raise ConfigError(f"data source {source!r} holds no text")
    return texts[:n] if n is not None else texts


def describe_sources() -> str:
    """One line per named source of every kind (texts, text pairs, speech), for --help texts."""
    from sparseft.data.pairs import PAIR_SOURCES
    from sparseft.data.speech import SPEECH_SOURCES

    named = [*SOURCES.values(), *PAIR_SOURCES.values(), *SPEECH_SOURCES.values()]
    return "; ".join(f"{s.name}: {s.description}" for s in named)


def _path_texts(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES and p.is_file())
        if not files:
            raise ConfigError(f"folder {path} holds no .txt or .jsonl file")
        return [t for f in files for t in _file_texts(f)]
    if path.is_file():
        return _file_texts(path)
    names = ", ".join(repr(n) for n in SOURCES)
    raise ConfigError(f"data source '{path}' is neither {names} nor an existing .txt/.jsonl file or folder")


def _file_texts(path: Path) -> list[str]:
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); give .txt or .jsonl files") from None
    if path.suffix == ".jsonl":
        return _jsonl_texts(path, content)
    return [t.strip() for t in content.split("\n\n") if t.strip()]


def _jsonl_texts(path: Path, content: str) -> list[str]:
    texts = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{number}: expected a JSON object with a 'text' field ({err})") from None
    return texts
