"""The sequential driver: solve every prunable layer of any HF model, block by block, on calibration data.

One driver for every method (a `Solver` from `sparseft.prune.solvers`: SparseGPT, Wanda, magnitude for
pruning; GPTQ for quantization) and every architecture. For each stack of blocks it captures what the
blocks receive (`capture.py`), then per block: replays the block on the calibration inputs with hooks
that collect what the solver needs (`stats.py`), solves each layer, and runs the solved block so that
the next block sees the activations of the already-solved model (as SparseGPT's and GPTQ's reference
code do). Encoder-decoder models go encoder first; the decoder's cross-attention inputs then come from
the solved encoder, because the decoder's inputs are captured by a fresh forward of the whole model.
A solver that needs no data (magnitude) runs without calibration batches through `datafree.py`.
Where block weights live is a `BlockResidency` (`residency.py`): in memory, or streamed from disk one
block at a time (`sparseft.models.lazy`, driven by `sparseft.prune.streaming`) with the same code path.

    >>> from sparseft.models import load_model
    >>> from sparseft.data.calibration import calibration_batches
    >>> model = load_model("smollm2-135m")
    >>> report = oneshot(model, calibration_batches("smollm2-135m", "gsm"), method="sparsegpt", sparsity=0.5)
    >>> print(report.format(max_rows=5))
    >>> save_masks(report.masks, "out/masks.safetensors")        # (out, in) masks
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sparseft.errors import ConfigError, ModelError
from sparseft.models.mask_io import Masks
from sparseft.models.walk import Block, find_blocks, find_prunable, weight_matrix
from sparseft.prune.allocation import Allocation, allocate_blocks, block_outlier_ratios
from sparseft.prune.capture import BlockCall, StackInputs, capture_stack_inputs, to_device
from sparseft.prune.datafree import owner_block, solve_without_data
from sparseft.prune.magnitude import parse_nm, validate_sparsity
from sparseft.prune.report import LayerReport, OneShotReport
from sparseft.prune.residency import BlockResidency, InMemory
from sparseft.prune.solvers import LayerProblem, Solver, SolveSettings, get_solver, method_names
from sparseft.prune.sparsegpt import output_error
from sparseft.prune.stats import InputStats
from sparseft.prune.token_masks import TokenMasks

__all__ = ["BlockResidency", "InMemory", "LayerReport", "OneShotReport", "capture_stack_inputs",
           "oneshot", "solve_sequentially"]


def __getattr__(name: str) -> Any:
    # METHODS follows the registry, so a solver registered after import is listed too.
    if name == "METHODS":
        return method_names("prune")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class _Run:
    """One sequential solve: the solver and its settings, and how the driver runs it."""

    solver: Solver
    settings: SolveSettings
    hessian_batches: int | None  # None: every batch
    masks: Mapping[str, Tensor]  # fixed (out, in) masks handed to a quantizing solver
    device: torch.device | None
    progress: bool
    allocation: Allocation = Allocation()
    block_sparsity: dict[str, float] = field(default_factory=dict)  # filled by OWL before the solve

    def settings_for(self, block: Block) -> SolveSettings:
        sparsity = self.block_sparsity.get(block.name)
        return self.settings if sparsity is None else replace(self.settings, sparsity=sparsity)


@torch.no_grad()
def oneshot(
    model: nn.Module,
    calib_batches: Iterable[Mapping[str, Any]] | None,
    method: str = "sparsegpt",
    sparsity: float = 0.5,
    nm: str | tuple[int, int] | None = None,
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    progress: bool = True,
    device: str | torch.device | None = None,
    error_batches: int | None = 1,
    residency: BlockResidency | None = None,
    allocation: Allocation | None = None,
) -> OneShotReport:
    """Prune `model` in place, block by block, and report per layer; the report's masks are (out, in).

    `calib_batches`: model inputs (`model(**batch)`), e.g. from `sparseft.data.calibration`. Magnitude
    needs none (pass None: errors are then NaN). `nm` ("2:4") keeps N of every M inputs and overrides
    `sparsity`. `device` ("cuda"): where each block, its activations and statistics are processed, one
    block at a time; the rest of the model stays where it is.

    Per-layer errors (mean over tokens of ||(W - W') x||^2) need each layer's input Hessian H. SparseGPT
    collects H on every calibration token anyway, so its errors are exact. Wanda ranks weights by the
    input norms alone (diag H), and magnitude needs no data at all: for them H is collected only on the
    first `error_batches` batches (default 1, e.g. 8 x 512 tokens), enough to compare methods at a
    fraction of the cost; None measures the errors on every batch, 0 skips them (NaN). Magnitude uses
    only those batches.

    `residency` decides where block weights live (default: in memory); see `sparseft.prune.streaming`
    for pruning a model block by block from disk. `allocation=Allocation("owl")` spreads `sparsity`
    over blocks by their outliers (`sparseft.prune.allocation`), from one extra dense pass over the data.
    """
    solver = get_solver(method, "prune")
    sparsity, nm = validate_sparsity(sparsity), parse_nm(nm)
    settings = _settings(sparsity, nm, blocksize, percdamp)
    if error_batches is not None and error_batches < 0:
        raise ConfigError(f"error_batches must be >= 0 or None (all batches), got {error_batches}")
    residency = residency or InMemory()
    allocation = allocation or Allocation()
    if allocation.method != "uniform" and (nm or not solver.needs.data):
        raise ConfigError(f"allocation {allocation.method!r} needs a data method with a sparsity, not N:M or magnitude")
    report = OneShotReport(method, 1 - nm[0] / nm[1] if nm else sparsity, nm)
    start = time.perf_counter()
    batches = _batches_for(solver, calib_batches, error_batches)
    if not batches:
        if solver.needs.data:
            raise ConfigError(f"{method} needs calibration batches; only magnitude pruning works without data")
        solve_without_data(model, solver, settings, find_prunable(model, targets, ignore), report, residency)
    else:
        layers = _require_layers(model, find_prunable(model, targets, ignore), targets, ignore)
        run = _Run(solver, settings, _hessian_batches(solver, error_batches), {},
                   torch.device(device) if device is not None else None, progress, allocation)
        _solve_stacks(model, batches, layers, run, report, residency)
    report.seconds = time.perf_counter() - start
    return report


@torch.no_grad()
def solve_sequentially(
    model: nn.Module,
    calib_batches: Iterable[Mapping[str, Any]],
    method: str,
    layers: Mapping[str, nn.Module],
    *,
    kind: str = "quantize",
    masks: Mapping[str, Tensor] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> OneShotReport:
    """Run solver `method` of `kind` on `layers` (name -> module) block by block, in place; report per layer.

    The entry point of the quantize path: `quantize_model(..., method="gptq")` calls
    `solve_sequentially(model, batches, "gptq", layers, masks=masks)`; `masks` ((out, in), by layer name)
    are the fixed masks a quantizing solver keeps. The report's `scales` hold its int8 scales.
    """
    solver = get_solver(method, kind)
    batches = list(calib_batches)
    if not batches:
        raise ConfigError(f"{method} needs calibration batches (calib_batches)")
    report = OneShotReport(method, 0.0, None)
    start = time.perf_counter()
    run = _Run(solver, _settings(0.0, None, blocksize, percdamp), None, dict(masks or {}),
               torch.device(device) if device is not None else None, progress)
    _solve_stacks(model, batches, _require_layers(model, dict(layers), None, None), run, report, InMemory())
    report.seconds = time.perf_counter() - start
    return report


def _settings(sparsity: float, nm, blocksize: int, percdamp: float) -> SolveSettings:
    if blocksize < 1 or not 0 <= percdamp < 1:
        raise ConfigError(f"need blocksize >= 1 and 0 <= percdamp < 1, got {blocksize} and {percdamp}")
    return SolveSettings(sparsity, nm, blocksize, percdamp)


def _batches_for(solver: Solver, calib_batches, error_batches: int | None) -> list[Mapping[str, Any]]:
    batches = list(calib_batches) if calib_batches is not None else []
    if not solver.needs.data and error_batches is not None:
        batches = batches[:error_batches]  # the solve ignores the data; only the error report uses it
    return batches


def _hessian_batches(solver: Solver, error_batches: int | None) -> int | None:
    return None if solver.needs.hessian == "all" else error_batches


def _require_layers(model: nn.Module, layers: dict[str, nn.Module], targets, ignore) -> dict[str, nn.Module]:
    if not layers:
        raise ModelError(f"{type(model).__name__} has no prunable layer matching targets={targets} ignore={ignore}")
    return layers


def _layers_by_block(blocks: Sequence[Block], layers: Mapping[str, nn.Module]) -> dict[str, dict[str, nn.Module]]:
    by_block: dict[str, dict[str, nn.Module]] = {b.name: {} for b in blocks}
    outside = []
    for name, module in layers.items():
        owner = owner_block(name, blocks)
        if owner is None:
            outside.append(name)
        else:
            by_block[owner][name] = module
    if outside:
        raise ConfigError(
            f"layers outside the transformer blocks cannot be solved sequentially: {outside[:5]}; "
            "narrow --target/--ignore, or prune them by magnitude"
        )
    return by_block


def _solve_stacks(model: nn.Module, batches, layers, run: _Run, report: OneShotReport, residency) -> None:
    blocks = find_blocks(model)
    if not blocks:
        raise ModelError(f"{type(model).__name__} has no transformer block stack (nn.ModuleList of blocks)")
    by_block = _layers_by_block(blocks, layers)
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False  # a KV cache would only cost memory here
    try:
        if run.allocation.method == "owl":
            _allocate_owl(model, batches, blocks, by_block, run, report, residency)
        for stack in dict.fromkeys(b.stack for b in blocks):  # encoder first, as find_blocks orders them
            stack_blocks = [b for b in blocks if b.stack == stack]
            with residency.capturing(blocks):  # a decoder's capture runs the (solved) encoder too
                inputs = capture_stack_inputs(model, stack_blocks, batches)
            _solve_stack(stack_blocks, inputs, by_block, run, report, residency)
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache


def _allocate_owl(model, batches, blocks, by_block, run: _Run, report: OneShotReport, residency) -> None:
    ratios = block_outlier_ratios(model, batches, blocks, by_block, residency, run.device, run.allocation.threshold)
    run.block_sparsity.update(allocate_blocks(ratios, by_block, run.settings.sparsity, run.allocation.lam))
    report.block_sparsity, report.outlier_ratios = dict(run.block_sparsity), ratios


def _solve_stack(blocks, inputs: StackInputs, by_block, run: _Run, report: OneShotReport, residency) -> None:
    hidden = inputs.hidden
    bar = tqdm(blocks, desc=f"{run.solver.name} {blocks[0].stack}", unit="block", disable=not run.progress)
    for i, block in enumerate(bar):
        bar.set_postfix_str(block.name)
        residency.enter(block, run.device)
        masks = _solve_block(block, hidden, inputs.calls[i], inputs.masks, by_block[block.name], run, report)
        if i + 1 < len(blocks):  # the last block's outputs feed nothing we solve
            for h, call in zip(hidden, inputs.calls[i], strict=True):
                # Into the same buffers, batch by batch: the calibration activations are held once, not
                # twice, and no long-lived tensor is reallocated among the block's temporaries.
                h.copy_(call.run(block.module, to_device(h, run.device), run.device))
        report.masks.update(residency.leave(block, masks))
    bar.close()


def _solve_block(block: Block, hidden: list[Tensor], calls: list[BlockCall], masks_of_batches: list[TokenMasks],
                 block_layers, run: _Run, report: OneShotReport) -> Masks:
    """Collect the statistics of the block's layers on the calibration inputs, solve them; return the masks."""
    masks: Masks = {}
    if not block_layers:
        return masks
    stats = InputStats(block_layers, run.hessian_batches, norms=run.solver.needs.norms, block=block.module)
    try:
        for h, call, real in zip(hidden, calls, masks_of_batches, strict=True):
            stats.begin_batch(real)
            call.run(block.module, to_device(h, run.device), run.device)
            stats.end_batch()
        for name, module in block_layers.items():
            masks[name] = _solve_layer(name, module, stats, run, report, run.settings_for(block))
        report.tokens = max(report.tokens, max(stats.tokens.values(), default=0))
    finally:
        stats.remove()
    return masks


def _solve_layer(name: str, module: nn.Module, stats: InputStats, run: _Run, report: OneShotReport,
                 settings: SolveSettings) -> Tensor:
    """Solve one layer in place from its input statistics; report it and return its (out, in) mask (CPU).

    The errors need H; where it was not collected (`error_batches=0`) they are NaN.
    """
    t0 = time.perf_counter()
    W = weight_matrix(module)
    W0 = W.detach().to(torch.float32)
    H = stats.hessian(name)
    fixed = run.masks.get(name)
    problem = LayerProblem(W0, H, stats.norms(name) if run.solver.needs.norms else None,
                           None if fixed is None else fixed.to(W0.device, torch.bool))
    solution = run.solver.solve(problem, settings)
    error = rel = float("nan")
    if H is not None:
        error = output_error(W0, solution.W, H)
        signal = output_error(W0, torch.zeros_like(W0), H)
        rel = error / signal if signal > 0 else 0.0
    W.copy_(solution.W.to(W.device, W.dtype))
    if solution.scale is not None:
        report.scales[name] = solution.scale.to(W.device)
    report.layers.append(LayerReport(name, (W.shape[0], W.shape[1]), float((W == 0).float().mean()), error, rel,
                                     time.perf_counter() - t0, stats.hessian_tokens(name)))
    return solution.mask.cpu()
