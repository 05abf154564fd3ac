"""What every stage shares: where it reads and writes (`StageIO`), loading its input, its record.

    >>> io = StageIO("smollm2-135m", output=Path("runs/pruned"))
    >>> model, tokenizer = load_input(io)
    >>> record = stage_record("prune", settings, io, total_sparsity=0.5)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sparseft.errors import ConfigError
from sparseft.models.saving import MASKS_FILE, RECORD_FILE

#: Human-readable results (tables, summaries). The CLI prints this logger's messages to stdout;
#: library users see them through their own logging configuration.
report_log = logging.getLogger("sparseft.report")


@dataclass(frozen=True)
class StageIO:
    """Where a stage reads and writes.

    `input`: the model to read (packaged name, folder, .gguf, hub id); `output`: the folder to write
    (None: write nothing, e.g. `sparseft eval`); `source`: the run's original dense model (the teacher
    named 'source', and where a tokenizer is found when the input has none); `resume`: fine-tuning
    continues from the newest checkpoint beside `output`; `overwrite`: None replaces only an output sparseft
    wrote (or an empty folder), True anything (see `sparseft.atomic`)."""

    input: str
    output: Path | None = None
    source: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    resume: bool = False
    overwrite: bool | None = None

    @property
    def origin(self) -> str:
        return self.source or self.input

    def require_output(self, stage: str) -> Path:
        """The output folder, checked before any work: it must be absent or replaceable."""
        from sparseft.atomic import check_replaceable

        if self.output is None:
            raise ConfigError(f"the {stage} stage writes a model: give an output folder")
        check_replaceable(Path(self.output), self.overwrite)
        return Path(self.output)


def load_input(io: StageIO, dtype: str | None = None):
    """(model, tokenizer or processor) of the stage's input; the tokenizer falls back to `io.source`'s."""
    from sparseft.models import load_model

    return load_model(io.input, dtype or io.dtype, trust_remote_code=io.trust_remote_code), input_tokenizer(io)


def input_tokenizer(io: StageIO):
    """The tokenizer (or processor) saved with the input, else with `io.source`, else None."""
    from sparseft.models import load_tokenizer

    for ref in dict.fromkeys(r for r in (io.input, io.source) if r is not None):
        tokenizer = load_tokenizer(ref, trust_remote_code=io.trust_remote_code, missing_ok=True)
        if tokenizer is not None:
            return tokenizer
    return None


def require_tokenizer(tokenizer, io: StageIO, why: str):
    if tokenizer is None:
        raise ConfigError(f"{why} needs a tokenizer, and none was found with {io.input} (or {io.origin})")
    return tokenizer


def input_masks(io: StageIO, path: str | None = None):
    """Masks of the input: `path` if given, else the input folder's masks file, else None."""
    from sparseft.prune import load_masks

    if path is not None:
        return load_masks(path)
    folder_file = Path(io.input) / MASKS_FILE
    return load_masks(folder_file) if folder_file.is_file() else None


def made_from(ref: str) -> str | None:
    """The model `ref` was made from by sparseft's stages, or None when no stage wrote `ref`.

    Each stage's folder records its input in `stage.json`; the chain is followed back to the first input
    no stage wrote (the dense model: a packaged name, a folder or a hub id), e.g. compress <- finetune <-
    oneshot <- whisper-tiny.en. Relative inputs are as the stage was given them (from its working folder).

    >>> made_from("runs/whisper-50-int8")
    'whisper-tiny.en'
    """
    import json

    chain = [ref]
    while (Path(chain[-1]) / RECORD_FILE).is_file():
        try:
            previous = json.loads((Path(chain[-1]) / RECORD_FILE).read_text()).get("input")
        except (OSError, ValueError, AttributeError):
            break  # an unreadable record ends the chain where it is
        if not isinstance(previous, str) or previous in chain:  # a record naming itself would loop
            break
        chain.append(previous)
    return chain[-1] if len(chain) > 1 else None


def stage_record(kind: str, settings: BaseModel, io: StageIO, **results: Any) -> dict[str, Any]:
    """The record a stage returns and stores: what ran, on what, with which settings, and its results.

    `settings` and `input` are what the pipeline compares to decide whether a finished stage is reusable."""
    return {"stage": kind, "input": str(io.input), "settings": settings.model_dump(mode="json"), **results}


def folder_bytes(folder: str | Path, skip: tuple[str, ...] = ()) -> int:
    """Total size of the files directly inside `folder` (minus the names in `skip`)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file() and f.name not in skip)
