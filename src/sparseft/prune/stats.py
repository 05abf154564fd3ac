"""Statistics of each layer's inputs, accumulated by forward hooks while the driver replays a block.

What is collected is what the solver declares (`sparseft.prune.solvers.Needs`): the Hessian
H = 2/n sum x x^T (on every batch, or on a sample for the error report) and the mean of x_j^2 (Wanda),
over the real positions of each batch only (`sparseft.prune.token_masks`: padding is left out).

    >>> stats = InputStats(block_layers, hessian_batches=None, norms=False, block=block)
    >>> for h, call, m in zip(hidden, calls, masks):
    ...     stats.begin_batch(m); call.run(block, h, None); stats.end_batch()
    >>> H = stats.hessian("model.layers.0.self_attn.q_proj"); stats.remove()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sparseft.errors import ModelError
from sparseft.prune.sparsegpt import accumulate_hessian
from sparseft.prune.token_masks import TokenMasks, real_rows
from sparseft.prune.wanda import accumulate_norms


class InputStats:
    """Forward hooks that accumulate what each layer's method needs from its inputs, batch by batch.

    `hessian_batches`: H = 2/n sum x x^T over the first that many batches (None: all; SparseGPT needs
    all of it, the error report of Wanda and magnitude needs a sample); `norms`: the mean of x_j^2 over
    all batches (Wanda). Layers fed the very same tensor (q/k/v, gate/up) share their statistics:
    computing them once saves most of the cost of collection, which rivals the forward passes themselves.
    `block`: the block the layers belong to; with it, a cross-attention layer fed the encoder states is
    told apart from one fed the block's own positions when both have the same shape.
    """

    def __init__(self, layers: Mapping[str, nn.Module], hessian_batches: int | None, norms: bool,
                 block: nn.Module | None = None):
        self.H: dict[str, Tensor] = {}
        self.H_tokens: dict[str, int] = {}
        self.norm_sq: dict[str, Tensor] = {}
        self.tokens: dict[str, int] = {}
        self.owner: dict[str, str] = {}
        self._hessian_batches = hessian_batches
        self._norms = norms
        self._batch = 0
        self._batch_inputs: dict[int, tuple[Tensor, str]] = {}
        self._masks = TokenMasks()
        self._context: list[Tensor] = []
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in layers.items()]
        if block is not None:
            self._handles.append(block.register_forward_pre_hook(self._note_context, with_kwargs=True))

    def begin_batch(self, masks: TokenMasks) -> None:
        """Count only the real positions of the next batch (None in `masks`: every position)."""
        self._masks = masks

    def _note_context(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # The encoder states reach cross-attention's k/v projections as the very tensor the block was given.
        context = self._masks.context
        hidden = args[0] if args else kwargs.get("hidden_states")
        self._context = [] if context is None else [
            t for t in (*args, *kwargs.values())
            if isinstance(t, Tensor) and t is not hidden and t.dim() == 3 and tuple(t.shape[:2]) == tuple(context.shape)
        ]

    def _real_rows(self, x: Tensor) -> Tensor:
        masks = self._masks
        if masks.context is not None and any(x is t for t in self._context):
            return real_rows(x, masks.context)
        return real_rows(x, masks.hidden)

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0]
            seen = self._batch_inputs.get(id(x))
            if seen is not None and seen[0] is x and self.owner.setdefault(name, seen[1]) == seen[1]:
                return
            self.owner.setdefault(name, name)
            self._accumulate(name, self._real_rows(x).detach())
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
        self._masks, self._context = TokenMasks(), []
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


