"""Run a recipe's stages in order; each stage reads the previous stage's folder and writes its own.

Stage i writes `output/NN-KIND/` (NN = i+1) atomically, with its record (`stage.json`) inside. On a
rerun a finished stage is reused only when its record shows the same settings and the same input, and
every stage after a rerun one runs again; anything else runs (again). `resume=False` reruns everything.

>>> from sparseft.recipe import load_recipe
>>> results = run_recipe(load_recipe("recipes/smollm2-50-sparsegpt.yaml"))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sparseft.atomic import atomic_write_text
from sparseft.models.saving import RECORD_FILE
from sparseft.recipe import Recipe, Stage
from sparseft.stages import STAGE_RUNNERS, StageIO

log = logging.getLogger(__name__)


def stage_dirs(recipe: Recipe) -> list[Path]:
    return [Path(recipe.output) / f"{i + 1:02d}-{stage.kind}" for i, stage in enumerate(recipe.stages)]


def _reusable(folder: Path, stage: Stage, input_ref: str) -> dict | None:
    """The stage's finished record in `folder` if it ran with these settings on this input, else None."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (
        isinstance(record, dict)
        and record.get("stage") == stage.kind
        and record.get("input") == input_ref
        and record.get("settings") == stage.settings.model_dump(mode="json")
    )
    if not same:
        log.info("stage %s in %s ran with other settings or input: running it again", stage.kind, folder)
    return record if same else None


def _writes_model(kind: str) -> bool:
    return kind not in ("eval", "bench")


def run_recipe(recipe: Recipe, resume: bool = True) -> list[dict]:
    """Run (or resume) every stage; returns each stage's record."""
    records, previous, reuse = [], recipe.model, resume
    for stage, folder in zip(recipe.stages, stage_dirs(recipe), strict=True):
        record = _reusable(folder, stage, previous) if reuse else None
        if record is not None:
            log.info("stage %s: already done in %s, reusing it", stage.kind, folder)
        else:
            reuse = False  # later stages read this one's new output: they run again too
            log.info("stage %s -> %s", stage.kind, folder)
            io = StageIO(previous, folder, source=recipe.model, dtype=recipe.dtype, resume=resume)
            record = STAGE_RUNNERS[stage.kind](stage.settings, io)
        records.append(record)
        if _writes_model(stage.kind):
            previous = str(folder)
    atomic_write_text(Path(recipe.output) / "stages.json", json.dumps(records, indent=2, default=str))
    return records
