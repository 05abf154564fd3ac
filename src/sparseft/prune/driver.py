"""Sequential one-shot pruning of any HF model: SparseGPT, Wanda or magnitude, block by block.

The solvers are pure functions (`sparsegpt.py`, `wanda.py`, `magnitude.py`); this module owns the
plumbing: it captures what each transformer block receives from calibration samples, collects the
Hessians of the block's prunable layers with forward hooks, solves them, and runs the pruned block so
that the next block sees the activations of the already-pruned model (as in SparseGPT's reference).
Encoder-decoder models prune the encoder first; the decoder's cross-attention inputs then come from
the pruned encoder because the decoder's inputs are captured by a fresh forward of the whole model.
Where block weights live is a `BlockResidency`: in memory by default, or streamed from disk one block
at a time (`sparseft.models.lazy`, driven by `sparseft.prune.streaming`) with the same code path.

    >>> from sparseft.models import load_model
    >>> from sparseft.data.calibration import calibration_batches
    >>> model = load_model("smollm2-135m")
    >>> report = oneshot(model, calibration_batches("smollm2-135m", "gsm"), method="sparsegpt", sparsity=0.5)
    >>> print(report.format(max_rows=5))
    >>> save_masks(report.masks, "out/masks.safetensors")
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers.cache_utils import Cache
from transformers.pytorch_utils import Conv1D

from sparseft.errors import ConfigError, ModelError
from sparseft.models.walk import Block, find_blocks, find_prunable, weight_matrix
from sparseft.prune.magnitude import magnitude_mask, parse_nm, validate_sparsity
from sparseft.prune.masks import Masks
from sparseft.prune.sparsegpt import accumulate_hessian, output_error, sparsegpt_prune
from sparseft.prune.wanda import accumulate_norms, wanda_mask

log = logging.getLogger(__name__)

METHODS = ("sparsegpt", "wanda", "magnitude")


@dataclass
class LayerReport:
    """One pruned layer: measured sparsity and output error on the calibration inputs it saw.

    error = mean over tokens of ||(W - W') x||^2; rel_error divides it by the mean ||W x||^2; both are
    measured on `error_tokens` calibration tokens (NaN when none).
    """

    name: str
    shape: tuple[int, int]
    sparsity: float
    error: float
    rel_error: float
    seconds: float
    error_tokens: int = 0


@dataclass
class OneShotReport:
    """What `oneshot` did: per-layer reports, the masks (layout of each `weight`), and totals.

    A streamed run (`sparseft.prune.streaming`) writes the masks to disk as it goes: `masks` is then empty.
    """

    method: str
    sparsity: float
    nm: tuple[int, int] | None
    layers: list[LayerReport] = field(default_factory=list)
    masks: Masks = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def total_sparsity(self) -> float:
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        zeros = sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers)
        return zeros / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "sparsity": self.sparsity,
            "nm": f"{self.nm[0]}:{self.nm[1]}" if self.nm else None,
            "total_sparsity": self.total_sparsity,
            "calibration_tokens": self.tokens,
            "seconds": self.seconds,
            "layers": [
                {"name": r.name, "shape": list(r.shape), "sparsity": r.sparsity, "error": r.error,
                 "rel_error": r.rel_error, "error_tokens": r.error_tokens, "seconds": r.seconds}
                for r in self.layers
            ],
        }

    def format(self, max_rows: int | None = None) -> str:
        """A text table: one row per layer (sparsity, error, relative error), then the total."""
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        width = max([len(r.name) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>11}  {'sparsity':>8}  {'error':>10}  {'rel.err':>8}"]
        for r in rows:
            shape = "x".join(map(str, r.shape))
            lines.append(f"{r.name:<{width}}  {shape:>11}  {r.sparsity:>8.2%}  {r.error:>10.4g}  {r.rel_error:>8.2%}")
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f"... {len(self.layers) - max_rows} more layers")
        lines.append(
            f"{'total':<{width}}  {len(self.layers):>5} lyrs  {self.total_sparsity:>8.2%}"
            f"  ({self.method}, {self.tokens:,} calibration tokens, {self.seconds:.1f} s)"
        )
        error_tokens = {r.error_tokens for r in self.layers}
        if error_tokens and max(error_tokens) < self.tokens:
            lines.append(f"errors measured on the first {max(error_tokens):,} calibration tokens")
        return "\n".join(lines)


class _StopForward(Exception):
    """Raised by a capture hook to end the model's forward once the needed inputs are recorded."""


@dataclass
class _BlockCall:
    """How a stack called one block, minus the hidden states: positional args after them, and kwargs."""

    args: tuple
    kwargs: dict[str, Any]
    hidden_as_kwarg: bool

    @staticmethod
    def split(args: tuple, kwargs: dict[str, Any]) -> tuple[Tensor, _BlockCall]:
        # A KV cache filled during capture would make every replay attend to stale keys: drop it.
        args = tuple(None if isinstance(a, Cache) else a for a in args)
        kwargs = {k: None if isinstance(v, Cache) else v for k, v in kwargs.items()}
        if args:
            return args[0], _BlockCall(args[1:], kwargs, False)
        if "hidden_states" not in kwargs:
            raise ModelError("a block was called without hidden states (neither first argument nor keyword)")
        rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        return kwargs["hidden_states"], _BlockCall((), rest, True)

    def run(self, block: nn.Module, hidden: Tensor, device: torch.device | None) -> Tensor:
        args, kwargs = _to_device((self.args, self.kwargs), device)
        out = block(hidden_states=hidden, **kwargs) if self.hidden_as_kwarg else block(hidden, *args, **kwargs)
        return out if isinstance(out, Tensor) else out[0]  # tuples (T5, older HF) lead with hidden states

    def same_as(self, other: _BlockCall) -> bool:
        """True when both calls pass the very same objects: then one capture serves every block."""
        return (
            self.hidden_as_kwarg == other.hidden_as_kwarg
            and len(self.args) == len(other.args)
            and self.kwargs.keys() == other.kwargs.keys()
            and all(_same(a, b) for a, b in zip(self.args, other.args, strict=True))
            and all(_same(v, other.kwargs[k]) for k, v in self.kwargs.items())
        )


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, (Tensor, nn.Module)) or isinstance(b, (Tensor, nn.Module)):
        return False
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # objects without a usable ==
        return False


def _to_device(obj: Any, device: torch.device | None) -> Any:
    if device is None:
        return obj
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to_device(x, device) for x in obj)
    if isinstance(obj, list):
        return [_to_device(x, device) for x in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


@dataclass
class _StackInputs:
    """Calibration inputs of one stack: hidden states per batch, and each block's call per batch."""

    hidden: list[Tensor]
    calls: list[list[_BlockCall]]  # calls[block index in stack][batch index]


def _record_calls(model: nn.Module, blocks: Sequence[Block], batch: Mapping[str, Any], only_first: bool):
    """Run `model(**batch)` until the stack's first block (only_first) or past its last; return the calls."""
    hidden: list[Tensor] = []
    calls: list[_BlockCall] = []

    def pre_hook(module, args, kwargs):
        h, call = _BlockCall.split(args, kwargs)
        if not calls:  # later blocks' hidden states are recomputed from the pruned blocks anyway
            hidden.append(h)
        calls.append(call)
        if only_first:
            raise _StopForward

    def stop(module, args, output):
        raise _StopForward

    targets = blocks[:1] if only_first else blocks
    handles = [b.module.register_forward_pre_hook(pre_hook, with_kwargs=True) for b in targets]
    if not only_first:
        handles.append(blocks[-1].module.register_forward_hook(stop))
    try:
        model(**_without_cache(model, batch))
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if len(calls) != len(targets):
        raise ModelError(
            f"the forward called {len(calls)} of the {len(targets)} blocks of {blocks[0].name.rsplit('.', 1)[0]}; "
            "check that the calibration batches hold the inputs this model needs"
        )
    return hidden[0], calls


def _without_cache(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch plus use_cache=False where the forward takes it (T5's stacks ignore the top config)."""
    kwargs = dict(batch)
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs.setdefault("use_cache", False)
    return kwargs


def capture_stack_inputs(model: nn.Module, blocks: Sequence[Block], batches: Sequence[Mapping[str, Any]]):
    """Inputs of every block of one stack, recorded as the model's own forward passes them.

    A probe forward on the first batch records every block's call. If each block gets the very same
    objects as the first (masks, rotary embeddings, encoder states: Llama, GPT-2, Whisper), later batches
    stop at the first block; otherwise (T5's position bias made by block 0, per-layer masks of Gemma)
    every batch runs the whole stack once with the dense weights still in place for later blocks.
    """
    hidden0, probe = _record_calls(model, blocks, batches[0], only_first=False)
    shared = all(call.same_as(probe[0]) for call in probe[1:])
    hidden = [hidden0]
    calls: list[list[_BlockCall]] = [[call] for call in probe]
    for batch in batches[1:]:
        h, batch_calls = _record_calls(model, blocks, batch, only_first=shared)
        hidden.append(h)
        for i in range(len(blocks)):
            calls[i].append(batch_calls[0] if shared else batch_calls[i])
    log.debug("%s: %s block inputs", blocks[0].name, "shared" if shared else "per-block")
    return _StackInputs(hidden, calls)


class _InputStats:
    """Forward hooks that accumulate what each layer's method needs from its inputs, batch by batch.

    `hessian_batches`: H = 2/n sum x x^T over the first that many batches (None: all; SparseGPT needs
    all of it, the error report of Wanda and magnitude needs a sample); `norms`: the mean of x_j^2 over
    all batches (Wanda). Layers fed the very same tensor (q/k/v, gate/up) share their statistics:
    computing them once saves most of the cost of collection, which rivals the forward passes themselves.
    """

    def __init__(self, layers: Mapping[str, nn.Module], hessian_batches: int | None, norms: bool):
        self.H: dict[str, Tensor] = {}
        self.H_tokens: dict[str, int] = {}
        self.norm_sq: dict[str, Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.owner: dict[str, str] = {}
        self._hessian_batches = hessian_batches
        self._norms = norms
        self._batch = 0
        self._batch_inputs: dict[int, tuple[Tensor, str]] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in layers.items()]

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0]
            seen = self._batch_inputs.get(id(x))
            if seen is not None and seen[0] is x and self.owner.setdefault(name, seen[1]) == seen[1]:
                return
            self.owner.setdefault(name, name)
            self._accumulate(name, x.detach())
            self._batch_inputs[id(x)] = (x, name)

        return hook

    def _accumulate(self, name: str, x: Tensor) -> None:
        cols = x.shape[-1]
        if self._hessian_batches is None or self._batch < self._hessian_batches:
            if name not in self.H:
                self.H[name] = torch.zeros(cols, cols, dtype=torch.float32, device=x.device)
            self.H_tokens[name] = accumulate_hessian(self.H[name], self.H_tokens.get(name, 0), x)
        if self._norms:
            if name not in self.norm_sq:
                self.norm_sq[name] = torch.zeros(cols, dtype=torch.float32, device=x.device)
            accumulate_norms(self.norm_sq[name], self.tokens.get(name, 0), x)
        self.tokens[name] = self.tokens.get(name, 0) + x.numel() // cols

    def end_batch(self) -> None:
        self._batch_inputs.clear()
        self._batch += 1

    def _owner(self, name: str) -> str:
        if name not in self.owner:
            raise ModelError(f"layer {name} never ran during the calibration forward; cannot prune it from data")
        return self.owner[name]

    def hessian(self, name: str) -> Tensor | None:
        return self.H.get(self._owner(name))

    def hessian_tokens(self, name: str) -> int:
        return self.H_tokens.get(self._owner(name), 0)

    def norms(self, name: str) -> Tensor:
        return self.norm_sq[self._owner(name)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self.H.clear()
        self.norm_sq.clear()


class BlockResidency(Protocol):
    """Where the weights of a block are while the driver works on it.

    The driver calls `enter` before it runs or prunes a block and `leave` when done with it (with the
    block's masks; what `leave` returns stays in the report), and captures a stack's inputs inside
    `capturing`. `InMemory` (the default) keeps the model in memory and moves a block to `device` and
    back; `sparseft.models.lazy.StreamedWeights` loads each block from disk instead and writes it out
    pruned, so a model larger than memory is pruned one block at a time by this very driver.
    """

    def capturing(self, blocks: Sequence[Block]) -> AbstractContextManager: ...

    def enter(self, block: Block, device: torch.device | None) -> None: ...

    def leave(self, block: Block, masks: Masks) -> Masks: ...


class InMemory:
    """The whole model in memory; each block visits `device` (when given) while it is processed."""

    def __init__(self) -> None:
        self._home: dict[str, torch.device] = {}

    def capturing(self, blocks: Sequence[Block]) -> AbstractContextManager:
        return nullcontext()

    def enter(self, block: Block, device: torch.device | None) -> None:
        if device is not None:
            self._home[block.name] = next(block.module.parameters()).device
            block.module.to(device)

    def leave(self, block: Block, masks: Masks) -> Masks:
        if block.name in self._home:
            block.module.to(self._home.pop(block.name))
        return masks


@dataclass(frozen=True)
class _Settings:
    method: str
    sparsity: float
    nm: tuple[int, int] | None
    blocksize: int
    percdamp: float
    hessian_batches: int | None  # None: every batch
    device: torch.device | None
    progress: bool


def _prune_layer(module: nn.Module, stats: _InputStats, name: str, s: _Settings) -> tuple[Tensor, float, float]:
    """Prune one layer in place from its input statistics; return its (out, in) keep-mask and errors.

    The errors need H; where it was not collected (`error_batches=0`) they are NaN.
    """
    W = weight_matrix(module)
    W0 = W.detach().to(torch.float32)
    H = stats.hessian(name)
    if s.method == "sparsegpt":
        result = sparsegpt_prune(W0, H, s.sparsity, nm=s.nm, blocksize=s.blocksize, percdamp=s.percdamp)
        W_new, mask = result.weight, result.mask
    else:
        mask = wanda_mask(W0, stats.norms(name), s.sparsity, s.nm) if s.method == "wanda" \
            else magnitude_mask(W0, s.sparsity, s.nm)
        W_new = W0 * mask
    error = rel = float("nan")
    if H is not None:
        error = output_error(W0, W_new, H)
        signal = output_error(W0, torch.zeros_like(W0), H)
        rel = error / signal if signal > 0 else 0.0
    with torch.no_grad():
        W.copy_(W_new.to(W.device, W.dtype))
    return mask.to(W.device), error, rel


def _param_layout(module: nn.Module, mask_out_in: Tensor) -> Tensor:
    # Masks are stored like `module.weight`; GPT-2's Conv1D keeps it as (in, out), even when square.
    return mask_out_in.t().contiguous() if isinstance(module, Conv1D) else mask_out_in


def _owner_block(name: str, blocks: Sequence[Block]) -> str | None:
    return next((b.name for b in blocks if name.startswith(b.name + ".")), None)


def _layers_by_block(model: nn.Module, blocks: Sequence[Block], targets, ignore) -> dict[str, dict[str, nn.Module]]:
    layers = find_prunable(model, targets, ignore)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no prunable layer matching targets={targets} ignore={ignore}")
    by_block: dict[str, dict[str, nn.Module]] = {b.name: {} for b in blocks}
    outside = []
    for name, module in layers.items():
        owner = _owner_block(name, blocks)
        if owner is None:
            outside.append(name)
        else:
            by_block[owner][name] = module
    if outside:
        raise ConfigError(
            f"layers outside the transformer blocks cannot be pruned sequentially: {outside[:5]}; "
            "narrow --target/--ignore, or prune them by magnitude"
        )
    return by_block


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
) -> OneShotReport:
    """Prune `model` in place, block by block, and report per layer.

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
    for pruning a model block by block from disk.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    sparsity, nm = validate_sparsity(sparsity), parse_nm(nm)
    if blocksize < 1 or not 0 <= percdamp < 1:
        raise ConfigError(f"need blocksize >= 1 and 0 <= percdamp < 1, got {blocksize} and {percdamp}")
    if error_batches is not None and error_batches < 0:
        raise ConfigError(f"error_batches must be >= 0 or None (all batches), got {error_batches}")
    residency = residency or InMemory()
    report = OneShotReport(method, 1 - nm[0] / nm[1] if nm else sparsity, nm)
    start = time.perf_counter()
    batches = list(calib_batches) if calib_batches is not None else []
    if method == "magnitude" and error_batches is not None:
        batches = batches[:error_batches]  # magnitude's masks ignore the data; it only measures errors
    if not batches:
        if method != "magnitude":
            raise ConfigError(f"{method} needs calibration batches; only magnitude pruning works without data")
        _magnitude_without_data(model, report, sparsity, nm, targets, ignore, residency)
        report.seconds = time.perf_counter() - start
        return report

    blocks = find_blocks(model)
    if not blocks:
        raise ModelError(f"{type(model).__name__} has no transformer block stack (nn.ModuleList of blocks)")
    layers = _layers_by_block(model, blocks, targets, ignore)
    settings = _Settings(method, sparsity, nm, blocksize, percdamp,
                         None if method == "sparsegpt" else error_batches,
                         torch.device(device) if device is not None else None, progress)
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False  # a KV cache would only cost memory here
    try:
        for stack in dict.fromkeys(b.stack for b in blocks):  # encoder first, as find_blocks orders them
            with residency.capturing(blocks):  # a decoder's capture runs the (pruned) encoder too
                inputs = capture_stack_inputs(model, [b for b in blocks if b.stack == stack], batches)
            _prune_stack([b for b in blocks if b.stack == stack], inputs, layers, report, settings, residency)
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
    report.seconds = time.perf_counter() - start
    return report


def _prune_stack(blocks, inputs: _StackInputs, layers, report: OneShotReport, s: _Settings, residency) -> None:
    hidden = inputs.hidden
    bar = tqdm(blocks, desc=f"{s.method} {blocks[0].stack}", unit="block", disable=not s.progress)
    for i, block in enumerate(bar):
        bar.set_postfix_str(block.name)
        residency.enter(block, s.device)
        masks = _prune_block(block, hidden, inputs.calls[i], layers[block.name], report, s)
        if i + 1 < len(blocks):  # the last block's outputs feed nothing we prune
            for h, call in zip(hidden, inputs.calls[i], strict=True):
                # Into the same buffers, batch by batch: the calibration activations are held once, not
                # twice, and no long-lived tensor is reallocated among the block's temporaries.
                h.copy_(call.run(block.module, _to_device(h, s.device), s.device))
        report.masks.update(residency.leave(block, masks))
    bar.close()


def _prune_block(block: Block, hidden: list[Tensor], calls: list[_BlockCall], block_layers, report, s) -> Masks:
    """Collect the statistics of the block's layers on the calibration inputs, prune them; return the masks."""
    masks: Masks = {}
    if not block_layers:
        return masks
    stats = _InputStats(block_layers, s.hessian_batches, norms=s.method == "wanda")
    try:
        for h, call in zip(hidden, calls, strict=True):
            call.run(block.module, _to_device(h, s.device), s.device)
            stats.end_batch()
        for name, module in block_layers.items():
            t0 = time.perf_counter()
            mask, error, rel = _prune_layer(module, stats, name, s)
            W = weight_matrix(module)
            report.layers.append(LayerReport(
                name, (W.shape[0], W.shape[1]), float((W == 0).float().mean()), error, rel,
                time.perf_counter() - t0, stats.hessian_tokens(name),
            ))
            masks[name] = _param_layout(module, mask).cpu()
        report.tokens = max(report.tokens, max(stats.tokens.values(), default=0))
    finally:
        stats.remove()
    return masks


def _magnitude_without_data(model, report, sparsity, nm, targets, ignore, residency: BlockResidency) -> None:
    """Magnitude masks for every targeted layer, block by block (a streamed model holds one block at a time)."""
    layers = find_prunable(model, targets, ignore)
    if not layers:
        raise ModelError(
            f"{type(model).__name__} has no prunable layer (nn.Linear or Conv1D inside transformer blocks"
            f"{', matching targets ' + str(targets) if targets else ''}); check --target/--ignore"
        )
    blocks = find_blocks(model)
    owners = {name: _owner_block(name, blocks) for name in layers}
    for block in blocks:
        mine = [name for name in layers if owners[name] == block.name]
        if mine:
            residency.enter(block, None)
            masks = {name: _magnitude_layer(name, layers[name], sparsity, nm, report) for name in mine}
            report.masks.update(residency.leave(block, masks))
    for name in (n for n in layers if owners[n] is None):  # e.g. --target lm_head: always resident
        report.masks[name] = _magnitude_layer(name, layers[name], sparsity, nm, report)
    order = {name: i for i, name in enumerate(layers)}
    report.layers.sort(key=lambda r: order[r.name])


def _magnitude_layer(name: str, module: nn.Module, sparsity: float, nm, report: OneShotReport) -> Tensor:
    W = weight_matrix(module)
    mask = magnitude_mask(W, sparsity, nm)
    W.mul_(mask.to(W.dtype))
    report.layers.append(LayerReport(name, (W.shape[0], W.shape[1]), float((W == 0).float().mean()),
                                     float("nan"), float("nan"), 0.0, 0))
    return _param_layout(module, mask).cpu()
