"""Run a recipe's stages in order; each stage reads the previous stage's folder and writes its own.

Stage i writes `output/NN-KIND/` (NN = i+1) atomically and records what it did in `sparseft.json`;
a rerun skips every stage whose folder is complete, so a run can stop and resume between stages.

>>> from sparseft.recipe import load_recipe
>>> results = run_recipe(load_recipe("recipes/smollm2-demo.yaml"))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparseft.models.saving import RECORD_FILE
from sparseft.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage runner gets: the recipe, the folder to read, the folder to write."""

    recipe: Recipe
    source: str  # the recipe's original model (dense teacher)
    input: str  # previous stage's folder, or the recipe's model for the first stage
    output: Path


StageRunner = Callable[[StageContext, object], dict]


def _runners() -> dict[str, StageRunner]:
    from sparseft import stages

    return {
        "prune": stages.run_prune,
        "oneshot": stages.run_oneshot,
        "finetune": stages.run_finetune,
        "quantize": stages.run_quantize,
        "compress": stages.run_compress,
        "eval": stages.run_eval,
    }


def stage_dirs(recipe: Recipe) -> list[Path]:
    return [Path(recipe.output) / f"{i + 1:02d}-{stage.kind}" for i, stage in enumerate(recipe.stages)]


def _finished(folder: Path) -> dict | None:
    record = folder / RECORD_FILE
    return json.loads(record.read_text()) if record.exists() else None


def run_recipe(recipe: Recipe, resume: bool = True) -> list[dict]:
    """Run (or resume) every stage; returns each stage's record."""
    runners = _runners()
    records, previous = [], recipe.model
    for stage, folder in zip(recipe.stages, stage_dirs(recipe), strict=True):
        done = _finished(folder) if resume else None
        if done is not None:
            log.info("stage %s: already done in %s, skipping", stage.kind, folder)
            record = done
        else:
            log.info("stage %s -> %s", stage.kind, folder)
            record = runners[stage.kind](StageContext(recipe, recipe.model, previous, folder), stage.settings)
        records.append(record)
        if (folder / "config.json").exists():  # eval stages write a record but no model
            previous = str(folder)
    summary = Path(recipe.output) / "stages.json"
    summary.write_text(json.dumps(records, indent=2, default=str))
    return records
