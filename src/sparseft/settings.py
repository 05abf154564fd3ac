"""Typed settings of every stage: the one schema that the CLI, recipes and the Python API all fill.

Each class is strict (unknown keys and bad values fail with the field's path) and frozen. A recipe
stage `{oneshot: {...}}` is validated as `OneShotSettings`; `sparseft oneshot --sparsity 0.6` builds
the same object from its options; `sparseft.stages.run_oneshot(settings, io)` runs it either way.

    >>> OneShotSettings(method="wanda", sparsity=0.6, calib={"source": ["gsm"], "nsamples": 32})
    >>> FinetuneSettings(steps=100, loss={"task": 1, "squarehead": 1}, gmp={"final_sparsity": 0.7})
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

Strictness = ConfigDict(extra="forbid", frozen=True)


class Strict(BaseModel):
    model_config = Strictness


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _regexes(value: list[str] | None) -> list[str] | None:
    for pattern in value or []:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({err})") from None
    return value


def _regex_keys(value: dict[str, float]) -> dict[str, float]:
    _regexes(list(value))
    return value


def _device(value: str | None) -> str | None:
    import torch

    if value is not None:
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(f"{value!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    return value


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _known_sources(value: list[str]) -> list[str]:
    from pathlib import Path

    from sparseft.data.kinds import named_sources

    named = named_sources()
    for item in value:
        if item not in named and not Path(item).exists():
            names = ", ".join(repr(n) for n in named)
            raise ValueError(f"data source {item!r} is neither {names} nor an existing file or folder "
                             "(.txt/.jsonl texts, .tsv/.jsonl text pairs, audio manifests)")
    return value


def _check_method(value: str) -> str:
    from sparseft.prune.solvers import method_names

    if value not in method_names("prune"):
        raise ValueError(f"unknown method {value!r}; registered pruning solvers: {', '.join(method_names('prune'))}")
    return value


def _check_nm(value: str | None) -> str | None:
    from sparseft.prune.magnitude import parse_nm

    if value is not None:
        parse_nm(value)
    return value


Finite = Annotated[float, AfterValidator(_finite)]
Sparsity = Annotated[float, Field(ge=0.0, lt=1.0, description="fraction of weights set to zero, in [0, 1)")]
Regexes = Annotated[list[str] | None, AfterValidator(_regexes)]
Sources = Annotated[
    list[str], BeforeValidator(_as_list), AfterValidator(_known_sources),
    Field(min_length=1, description="named sources or .txt/.jsonl paths"),
]
NM = Annotated[str | None, AfterValidator(_check_nm), Field(description="N:M pattern, e.g. '2:4' (keep N of M)")]
Dtype = Literal["float32", "bfloat16"]
def _check_values(value: str) -> str:
    from sparseft.runtime.formats import format_names

    if value not in format_names():
        raise ValueError(f"unknown value format {value!r}; the runtime's formats: {', '.join(format_names())}")
    return value


def _check_peers(value: list[str]) -> list[str]:
    from sparseft.peers import parse_peer

    for spec in value:
        try:
            parse_peer(spec)
        except Exception as err:  # a ConfigError's message, as a validation error of the field
            raise ValueError(str(err)) from None
    return value


Values = Annotated[str, AfterValidator(_check_values), Field(description="a value format of the runtime's registry")]


class LayerSelection(Strict):
    targets: Regexes = Field(None, description="regexes of layers to select (default: Linears in blocks)")
    ignore: Regexes = Field(None, description="regexes of layers to leave alone")


class Calibration(Strict):
    """Calibration windows: `nsamples` random windows of `seqlen` tokens of the sources' calibration split.

    For seq2seq and speech models, `nsamples` text pairs or clips (with labels of at most `seqlen` tokens);
    fields left out take the model kind's defaults (speech: espeak, 32 clips, 4 per batch).
    """

    source: Sources = ["gsm"]
    nsamples: int = Field(128, gt=0)
    seqlen: int = Field(512, gt=1)
    batch_size: int = Field(8, gt=0, description="windows per forward pass")
    seed: int = Field(0, ge=0)


class PruneSettings(LayerSelection):
    """Data-free magnitude pruning.

    ```yaml
    - prune: {sparsity: 0.5, scheme: global, overrides: {'mlp\\.down_proj': 0.3}}
    ```
    """

    sparsity: Sparsity = 0.5
    scheme: Literal["uniform", "global"] = "uniform"
    nm: NM = None
    overrides: Annotated[dict[str, Sparsity], AfterValidator(_regex_keys)] = Field(
        default_factory=dict, description="layer regex -> sparsity"
    )


class OneShotSettings(LayerSelection):
    """One-shot pruning with calibration data, block by block (SparseGPT, Wanda or magnitude).

    ```yaml
    - oneshot: {method: sparsegpt, sparsity: 0.5, calib: {source: gsm, nsamples: 128, seqlen: 512}}
    - oneshot: {sparsity: 0.7, allocation: owl}     # per-block sparsity by outlier ratio, mean 0.7
    ```
    `calib` defaults to gsm 128 x 512 for the data methods; magnitude uses data only if given (errors).
    """

    method: Annotated[str, AfterValidator(_check_method)] = Field(
        "sparsegpt", description="a registered pruning solver: sparsegpt, wanda, magnitude, ..."
    )
    sparsity: Sparsity = 0.5
    nm: NM = None
    calib: Calibration | None = None
    blocksize: int = Field(128, gt=0, description="SparseGPT column block size")
    percdamp: float = Field(0.01, gt=0.0, lt=1.0, description="SparseGPT dampening (fraction of mean diag H)")
    low_memory: Literal["auto", "on", "off"] = "auto"
    device: Annotated[str | None, AfterValidator(_device)] = Field(
        None, description="device each block is processed on (e.g. cuda)"
    )
    error_batches: int | None = Field(1, ge=0, description="batches for Wanda/magnitude errors; None = all")
    allocation: Literal["uniform", "owl"] = Field(
        "uniform", description="spread of the sparsity over blocks: the same everywhere, or OWL (by outliers)"
    )
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5, description="OWL: a block differs from the target by <= 2x this")
    owl_threshold: float = Field(5.0, gt=0.0, description="OWL: outlier = score above this x the block's mean")
    progress: bool = True

    @property
    def calibration(self) -> Calibration | None:
        """The calibration to use: the given one, else the default for data methods, else none."""
        return self.calib or (Calibration() if self.method != "magnitude" else None)


class LossWeights(Strict):
    task: float = Field(1.0, ge=0.0, description="weight of the model's own cross-entropy")
    kd: float = Field(0.0, ge=0.0, description="weight of logit distillation")
    squarehead: float = Field(1.0, ge=0.0, description="weight of SquareHead hidden-state distillation")
    temperature: float = Field(1.0, gt=0.0, description="logit KD temperature")
    squarehead_normalize: Literal["token", "layer"] = Field(
        "token", description="SquareHead denominator: each token's teacher power, or the layer's mean"
    )


class GMPSettings(Strict):
    """Gradual magnitude pruning on the cubic schedule, from init_sparsity to final_sparsity."""

    init_sparsity: Sparsity = 0.0
    final_sparsity: Sparsity = 0.5
    start_step: int = Field(0, ge=0)
    end_step: int | None = Field(None, gt=0, description="step where final_sparsity is reached (3/4 of steps)")
    frequency: int = Field(10, gt=0)
    scheme: Literal["uniform", "global", "owl"] = Field(
        "uniform", description="same sparsity per layer, one global magnitude ranking, or OWL's per-block shares"
    )
    owl_lambda: float = Field(0.08, ge=0.0, lt=0.5, description="scheme owl: largest block deviation / 2")


class FinetuneSettings(Strict):
    """Sparse fine-tuning (masks enforced) with distillation from a dense teacher, on the HF Trainer.

    ```yaml
    - finetune:
        teacher: source            # the dense model the run started from (or a model folder; null: none)
        data: gsm
        steps: 100
        loss: {task: 1.0, kd: 0.0, squarehead: 1.0}
        gmp: {final_sparsity: 0.7, end_step: 80}    # optional; else the input's masks stay fixed
    ```
    Checkpoints go to `OUTPUT.checkpoints/` beside the output folder.
    """

    teacher: str | None = Field("source", description="'source' (the run's dense model), a model, or null")
    masks: str | None = Field(None, description="masks file (default: the input's masks, else its zeros)")
    data: Sources = Field(["gsm"], description="train split sources; left out: gsm, espeak (speech) or gsm-en-de (seq2seq)")
    nsamples: int = Field(512, gt=0, description="training texts (clips, pairs)")
    seqlen: int = Field(256, gt=1)
    pack: bool = Field(True, description="pack texts into full windows (else one padded example per text)")
    augment: bool = Field(False, description="speech: random echo, noise and gain on each read of a training clip")
    freeze: Regexes = Field(None, description="regexes (re.search) of parameter names kept as they are, e.g. "
                            "['^model\\.encoder\\.'] to train only a Whisper decoder")
    loss: LossWeights = LossWeights()
    teacher_dtype: Dtype = "float32"
    gmp: GMPSettings | None = None
    steps: int = Field(300, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    learning_rate: Finite = Field(1e-4, gt=0.0)
    warmup: float = Field(0.1, ge=0.0, le=1.0, description="warmup fraction of the steps")
    weight_decay: Finite = Field(0.0, ge=0.0)
    max_grad_norm: Finite = Field(1.0, gt=0.0)
    seed: int = Field(0, ge=0)
    bf16: bool = False
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N steps (default steps // 4)")
    save_total_limit: int = Field(2, gt=0)
    logging_steps: int | None = Field(None, gt=0, description="default steps // 20")
    report_to: str | None = Field(None, description="HF Trainer loggers (default tensorboard when installed)")
    fsdp: bool = False
    eval_steps: int | None = Field(None, gt=0, description="held-out score every N steps (a training curve on "
                                   "the test split of eval_data, in the record's log_history)")
    eval_data: Sources = Field(["gsm", "austen"], description="held-out sources of eval_steps; left out: the "
                               "model kind's test sources (as for eval)")
    eval_texts: int = Field(100, gt=0, description="texts / clips / pairs of each eval_data source")

    @property
    def needs_teacher(self) -> bool:
        return self.loss.kd > 0 or self.loss.squarehead > 0


class QuantizeSettings(LayerSelection):
    """INT8 quantization that keeps zeros (W8A8 dynamic/static or weight-only W8A16).

    ```yaml
    - quantize: {scheme: w8a8, ignore: ['mlp\\.down_proj$']}
    - quantize: {scheme: w8a8, head: int4}    # + the lm_head by GPTQ on a 4-bit grid
    ```
    """

    scheme: Literal["w8a8", "w8a16", "w8a8-static"] = "w8a8"
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    method: Literal["rtn", "gptq"] = "rtn"
    calib: Calibration = Calibration(nsamples=16, seqlen=256, batch_size=4)
    sensitivity: bool = Field(False, description="report each layer's W8A8 output error")
    keep_sensitive: int = Field(0, ge=0, description="leave the K most sensitive layers in full precision")
    head: Literal["int4", "int8"] | None = Field(
        None, description="also GPTQ-quantize the output projection (lm_head / proj_out) on the calibration data: "
                          "int4 (a scale per row and 128 columns) or int8 (per row); untied from the embedding")

    @property
    def needs_calibration(self) -> bool:
        return self.scheme == "w8a8-static" or self.method == "gptq" or self.wants_sensitivity or self.head is not None

    @property
    def wants_sensitivity(self) -> bool:
        return self.sensitivity or self.keep_sensitive > 0


class CompressSettings(Strict):
    """Bitmask + packed values for the sparse CPU runtime.

    ```yaml
    - compress: {values: int8}
    - compress: {values: int8, head: int8}    # the lm_head too (untied from the embedding if tied)
    - compress: {values: int8, head: int8, dense_layers: int8}   # and the unpruned block Linears, dense
    ```
    Layers: those in the input's masks file, else those with more than `min_sparsity` zeros.
    """

    values: Values = "int8"
    min_sparsity: float = Field(
        0.1, ge=0.0, lt=1.0, description="without a masks file: convert layers with more zeros than this"
    )  # a few stray zeros (GGUF rounding) would otherwise turn a dense layer into a slower sparse one
    head: Values | None = Field(
        None, description="also store the (dense) output projection, lm_head / proj_out, in this value format; "
                          "one tied to the input embedding gets its own packed copy"
    )  # fmt: skip  # SmolLM2's tied 49152 x 576 head is a fifth of its weights: fp32 there caps decode speed
    dense_layers: Values | None = Field(
        None, description="also store the block Linears left unpruned (e.g. Whisper's encoder) in this value "
                          "format, every column kept: their large batches then run on the runtime's dense "
                          "products (bf16 / int8) instead of fp32"
    )  # fmt: skip


class EvalSettings(Strict):
    """The model kind's metric on the test split of each source in `data` (each on its own), and weight
    sparsity: perplexity (causal LMs), normalised WER (speech), BLEU (seq2seq).

    ```yaml
    - eval: {data: gsm}
    - eval: {data: [librivox, cards]}        # Whisper: real clips; the default for speech models
    ```
    The causal default pairs the task (gsm: held-out templates) with general English (austen: a novel never
    trained on), so in-domain fitting cannot pass for recovery.
    """

    data: Sources = Field(["gsm", "austen"], description="test split sources; left out: gsm + austen, "
                          "librivox + cards (speech) or gsm-en-de (seq2seq)")
    seqlen: int = Field(512, gt=1)
    stride: int | None = Field(None, gt=0, description="sliding windows: score `stride` new tokens per window")
    max_texts: int | None = Field(None, gt=0, description="evaluate on the first N texts / clips / pairs of each source")
    tokenizer: str | None = Field(None, description="where the tokenizer is, if not with the model")
    gsm_accuracy: bool = Field(False, description="also greedy-decode the held-out GSM problems (exact match)")
    max_new_tokens: int = Field(200, gt=0, description="tokens generated per GSM problem, clip or pair")
    progress: bool = False


class BenchSettings(Strict):
    """Greedy generation speed of the model (and of `baseline`, interleaved in the same run), batch 1:
    text models decode `tokens` new tokens after `prompt`; speech models transcribe each clip of `data`
    (its test split) to the end, and both models' WER on those clips is reported too.

    ```yaml
    - bench: {tokens: 32, baseline: source}
    - bench: {baseline: source, data: librivox, max_clips: 3}     # Whisper: seconds per clip and WER
    ```
    """

    tokens: int = Field(64, gt=0, description="new tokens per round (text models)")
    data: Sources = Field(["librivox"], description="speech models: the clips transcribed (test split)")
    max_clips: int | None = Field(None, gt=0, description="speech models: the first N clips of `data`")
    rounds: int = Field(3, gt=0, description="interleaved rounds; the best is kept")
    baseline: str | None = Field(None, description="'source' (the run's dense model) or a model to compare")
    prompt: str = "Question: A farmer has 12 cows and buys 5 more. How many cows?\nAnswer:"
    fuse: bool = Field(False, description="fuse q/k/v and gate/up into one call each")
    compile: bool = Field(False, description="static KV cache and a compiled decoder step (minutes)")
    bf16_attention: bool = Field(False, description="attention over 256+ query rows (Whisper's encoder, long "
                                 "prompts) in bf16 where the CPU has AMX or AVX512-BF16")
    native: bool = Field(False, description="batch-1 greedy decode as one C call per token (Llama-family text "
                         "models: runtime/native_decode.py; Whisper: runtime/native_whisper.py; others use "
                         "generate()), model and baseline alike")
    threads: int | None = Field(None, gt=0)
    peers: Annotated[list[str], AfterValidator(_check_peers)] = Field([], description="other engines timed in the same rounds, ENGINE[:TYPE]: llama.cpp, "
                             "llama.cpp:Q4_0 (text models), ct2:int8 (Whisper); each from a venv of its own")
    peer_model: str | None = Field(None, description="the dense model's file for the peers (a .gguf, a CTranslate2 "
                                   "folder); default: the packaged source model's own files")


class KernelBenchSettings(Strict):
    """y = x W^T of one random sparse weight in each value type vs torch fp32 F.linear, same run."""

    shape: tuple[int, int] = (4096, 4096)
    sparsity: float = Field(0.7, ge=0.0, lt=1.0)
    batch: int = Field(1, gt=0)
    seconds: float = Field(2.0, gt=0.0)
    threads: int | None = Field(None, gt=0)


STAGE_SETTINGS: dict[str, type[Strict]] = {
    "prune": PruneSettings,
    "oneshot": OneShotSettings,
    "finetune": FinetuneSettings,
    "quantize": QuantizeSettings,
    "compress": CompressSettings,
    "eval": EvalSettings,
    "bench": BenchSettings,
}


def format_errors(err: ValidationError, names: dict[str, str] | None = None, schema: type | None = None) -> str:
    """One line per bad field: its path (or its name in `names`, e.g. a CLI option), what was wrong and,
    from `schema` (the model validated), what the field is."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        about = _description(schema, e["loc"]) if schema is not None else None
        lines.append(f"  {(names or {}).get(path, path)}: {e['msg']}" + (f" ({about})" if about else ""))
    return "\n".join(lines)


def _description(schema: type, loc: tuple) -> str | None:
    """The description of the field at `loc` (names and list indexes) inside the pydantic model `schema`."""
    import typing

    description, current = None, schema
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        field = fields[part]
        description = field.description
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return description
