"""Recipes: a YAML file naming the model and the stages to run in order, validated strictly.

Unknown keys and bad values fail with the field's path (e.g. `stages.1.oneshot.sparsity`). Example:

```yaml
model: smollm2-135m            # packaged name, model folder, .gguf file or hub id
output: runs/smollm2-sparse    # each stage writes output/NN-KIND/ ; a finished stage is skipped on rerun
stages:
  - oneshot:                   # SparseGPT / Wanda / magnitude with calibration data
      method: sparsegpt
      sparsity: 0.5
      calib: {source: gsm, nsamples: 64, seqlen: 256}
  - finetune:                  # sparse fine-tuning, masks fixed, SquareHead from the dense model
      steps: 100
      loss: {task: 1.0, kd: 0.0, squarehead: 1.0}
  - compress: {values: bf16}   # bitmask + packed values for the sparse CPU runtime
  - eval: {data: gsm}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from sparseft.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Sparsity = Annotated[float, Field(ge=0.0, lt=1.0, description="fraction of weights set to zero, in [0, 1)")]


class LayerSelection(Strict):
    targets: list[str] | None = Field(None, description="regexes of layers to prune (default: Linears in blocks)")
    ignore: list[str] | None = Field(None, description="regexes of layers to leave dense")


def _check_nm(value: str | None) -> str | None:
    from sparseft.prune.magnitude import parse_nm

    if value is not None:
        parse_nm(value)
    return value


NM = Annotated[str | None, AfterValidator(_check_nm), Field(description="N:M pattern, e.g. '2:4' (keep N of M)")]


class PruneStage(LayerSelection):
    """Data-free magnitude pruning."""

    sparsity: Sparsity = 0.5
    scheme: Literal["uniform", "global"] = "uniform"
    nm: NM = None
    overrides: dict[str, Sparsity] = Field(default_factory=dict, description="layer regex -> sparsity")


class Calibration(Strict):
    source: str = Field("gsm", description="'gsm' (generated GSM problems) or a text file / folder")
    nsamples: int = Field(128, gt=0)
    seqlen: int = Field(512, gt=1)


class OneShotStage(LayerSelection):
    """One-shot pruning with calibration data (SparseGPT, Wanda or magnitude)."""

    method: Literal["sparsegpt", "wanda", "magnitude"] = "sparsegpt"
    sparsity: Sparsity = 0.5
    nm: NM = None
    calib: Calibration = Calibration()
    blocksize: int = Field(128, gt=0)
    percdamp: float = Field(0.01, gt=0.0)


class LossWeights(Strict):
    task: float = Field(1.0, ge=0.0, description="weight of the model's own cross-entropy")
    kd: float = Field(0.0, ge=0.0, description="weight of logit distillation")
    squarehead: float = Field(1.0, ge=0.0, description="weight of SquareHead hidden-state distillation")


class GMP(Strict):
    """Gradual magnitude pruning on the cubic schedule, from init_sparsity to final_sparsity."""

    init_sparsity: Sparsity = 0.0
    final_sparsity: Sparsity = 0.5
    start_step: int = Field(0, ge=0)
    end_step: int = Field(100, gt=0)
    frequency: int = Field(10, gt=0)
    scheme: Literal["uniform", "global"] = "uniform"


class FinetuneStage(Strict):
    """Sparse fine-tuning (masks enforced) with distillation from a dense teacher."""

    teacher: str = Field("source", description="'source' (the recipe's model) or a model folder")
    data: str = Field("gsm", description="'gsm' (generated GSM problems) or a text file / folder")
    nsamples: int = Field(512, gt=0)
    steps: int = Field(100, gt=0)
    batch_size: int = Field(8, gt=0)
    seqlen: int = Field(256, gt=1)
    learning_rate: float = Field(5e-5, gt=0.0)
    loss: LossWeights = LossWeights()
    gmp: GMP | None = None


class QuantizeStage(LayerSelection):
    """INT8 quantization that keeps zeros."""

    scheme: Literal["w8a8", "w8a16"] = "w8a16"
    calib: Calibration = Calibration(nsamples=32)


class CompressStage(Strict):
    """Compressed checkpoint for the sparse CPU runtime."""

    values: Literal["fp32", "bf16", "int8"] = "bf16"


class EvalStage(Strict):
    """Held-out perplexity and weight sparsity."""

    data: str = "gsm"
    seqlen: int = Field(512, gt=1)
    max_texts: int | None = Field(None, gt=0, description="evaluate on the first N texts only (faster)")


STAGE_TYPES: dict[str, type[Strict]] = {
    "prune": PruneStage,
    "oneshot": OneShotStage,
    "finetune": FinetuneStage,
    "quantize": QuantizeStage,
    "compress": CompressStage,
    "eval": EvalStage,
}


class Stage(Strict):
    """Exactly one of the stage kinds, e.g. `{oneshot: {...}}`."""

    prune: PruneStage | None = None
    oneshot: OneShotStage | None = None
    finetune: FinetuneStage | None = None
    quantize: QuantizeStage | None = None
    compress: CompressStage | None = None
    eval: EvalStage | None = None

    def model_post_init(self, _context) -> None:
        chosen = [k for k in STAGE_TYPES if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a stage names exactly one of {', '.join(STAGE_TYPES)}; got {chosen or 'none'}")

    @property
    def kind(self) -> str:
        return next(k for k in STAGE_TYPES if getattr(self, k) is not None)

    @property
    def settings(self) -> Strict:
        return getattr(self, self.kind)


class Recipe(Strict):
    model: str = Field(description="packaged name, model folder, .gguf file or hub id")
    output: str = Field(description="folder for every stage's output")
    dtype: Literal["float32", "bfloat16"] = "float32"
    stages: list[Stage] = Field(min_length=1)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def parse_recipe(data: dict) -> Recipe:
    """Validate a recipe given as a dict; ConfigError lists every bad field by path."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise ConfigError("invalid recipe:\n" + _format_errors(err)) from None


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
