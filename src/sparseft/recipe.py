"""Recipes: a YAML file naming the model and the stages to run in order, validated strictly.

Unknown keys and bad values fail with the field's path (e.g. `stages.1.oneshot.sparsity`). Example:

```yaml
model: smollm2-135m            # packaged name, model folder, .gguf file or hub id
output: runs/smollm2-sparse    # each stage writes output/NN-KIND/; a finished stage with the same
                               # settings and input is reused on rerun, any other is run again
stages:
  - oneshot:                   # SparseGPT / Wanda / magnitude with calibration data
      method: sparsegpt
      sparsity: 0.5
      calib: {source: gsm, nsamples: 64, seqlen: 256}
  - finetune:                  # sparse fine-tuning, masks fixed, SquareHead from the dense model
      steps: 100
      loss: {task: 1.0, kd: 0.0, squarehead: 1.0}
  - compress: {values: bf16}   # bitmask + packed values for the sparse CPU runtime
  - eval: {data: gsm}           # perplexity on the test split (the 100 original GSM problems)
  - bench: {tokens: 32, baseline: source}   # decode tokens/s vs the dense model, same run
```
Every stage's fields are documented in `sparseft.settings` (the CLI builds the same objects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from sparseft.errors import ConfigError
from sparseft.settings import (
    STAGE_SETTINGS,
    BenchSettings,
    CompressSettings,
    EvalSettings,
    FinetuneSettings,
    OneShotSettings,
    PruneSettings,
    QuantizeSettings,
    Strict,
    format_errors,
)


class Stage(Strict):
    """Exactly one of the stage kinds, e.g. `{oneshot: {...}}`."""

    prune: PruneSettings | None = None
    oneshot: OneShotSettings | None = None
    finetune: FinetuneSettings | None = None
    quantize: QuantizeSettings | None = None
    compress: CompressSettings | None = None
    eval: EvalSettings | None = None
    bench: BenchSettings | None = None

    def model_post_init(self, _context) -> None:
        chosen = [k for k in STAGE_SETTINGS if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a stage names exactly one of {', '.join(STAGE_SETTINGS)}; got {chosen or 'none'}")

    @property
    def kind(self) -> str:
        return next(k for k in STAGE_SETTINGS if getattr(self, k) is not None)

    @property
    def settings(self) -> Strict:
        return getattr(self, self.kind)


class Recipe(Strict):
    model: str = Field(description="packaged name, model folder, .gguf file or hub id")
    output: str = Field(description="folder for every stage's output")
    dtype: Literal["float32", "bfloat16"] = "float32"
    stages: list[Stage] = Field(min_length=1)


def parse_recipe(data: dict) -> Recipe:
    """Validate a recipe given as a dict; ConfigError lists every bad field by path."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid recipe:\n" + format_errors(err, schema=Recipe)) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with keys model, output, stages")
    return parse_recipe(data)
