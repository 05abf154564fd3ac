"""Generic model walking: transformer blocks and their prunable layers, for any HF architecture.

No per-family tables: a *block stack* is any `nn.ModuleList` whose entries share one class and each hold
at least one prunable layer (`nn.Linear` or GPT-2's `Conv1D`). That finds `model.layers` (Llama, Qwen2,
Gemma), `transformer.h` (GPT-2), `transformer.blocks` (MPT), `model.decoder.layers` (OPT),
`encoder.block`/`decoder.block` (T5) and `model.encoder.layers`/`model.decoder.layers` (Whisper).
Prunable layers default to the Linears inside blocks, which leaves out embeddings, `lm_head`/`proj_out`
and norms without naming them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn
from transformers.pytorch_utils import Conv1D

from sparseft.models.layers import weight_matrix  # re-exported: callers import it from here

__all__ = ["Block", "PRUNABLE_TYPES", "find_block_stacks", "find_blocks", "find_prunable", "is_prunable",
           "modules_named", "weight_matrix"]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)


@dataclass(frozen=True)
class Block:
    """One transformer block: its dotted name, the module, its stack ("encoder" or "decoder") and index."""

    name: str
    module: nn.Module
    stack: str
    index: int


def is_prunable(module: nn.Module) -> bool:
    """True for layers whose weight is a 2-D matrix that a sparse kernel can run (Linear, Conv1D)."""
    return isinstance(module, PRUNABLE_TYPES)


def _holds_prunable(module: nn.Module) -> bool:
    # Linear-like modules (in/out_features) count too, so a model whose Linears were swapped for
    # sparseft's SparseLinear keeps its block structure.
    return any(is_prunable(m) or hasattr(m, "in_features") and hasattr(m, "out_features") for m in module.modules())


def _is_block_stack(module: nn.Module) -> bool:
    if not isinstance(module, nn.ModuleList) or len(module) == 0:
        return False
    first_type = type(module[0])
    return all(type(m) is first_type for m in module) and all(_holds_prunable(m) for m in module)


def _stack_kind(name: str) -> str:
    # Encoder-decoder models name their encoder stack "encoder" (T5, Whisper, BART); all else decodes.
    return "encoder" if re.search(r"(^|\.)encoder(\.|$)", name) else "decoder"


def find_block_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The outermost block stacks of `model`, in module order (encoder before decoder)."""
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        inside_found = any(name.startswith(prefix + ".") for prefix, _ in stacks)
        if not inside_found and _is_block_stack(module):
            stacks.append((name, module))
    return stacks


def find_blocks(model: nn.Module) -> list[Block]:
    """Every transformer block of `model`, encoder blocks first.

    >>> blocks = find_blocks(model)
    >>> blocks[0].name, blocks[0].stack
    ('model.layers.0', 'decoder')
    """
    blocks = []
    for stack_name, stack in find_block_stacks(model):
        for index, module in enumerate(stack):
            blocks.append(Block(f"{stack_name}.{index}", module, _stack_kind(stack_name), index))
    return blocks


def _compile(patterns: str | Sequence[str] | None) -> list[re.Pattern[str]]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    return [re.compile(p) for p in patterns]


def _matches(name: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return any(p.search(name) for p in patterns)


def freeze_parameters(model: nn.Module, patterns: str | Sequence[str] | None) -> int:
    r"""Stop training every parameter whose dotted name matches a regex (`re.search`); returns how many.

    >>> freeze_parameters(whisper, r"^model\.encoder\.")   # fine-tune the decoder, keep the encoder
    """
    compiled = _compile(patterns)
    frozen = 0
    for name, parameter in model.named_parameters():
        if compiled and _matches(name, compiled):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def find_prunable(
    model: nn.Module,
    targets: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Prunable layers of `model` by dotted name, in module order.

    Default: every Linear/Conv1D inside a transformer block. `targets` (regexes, `re.search`) replace that
    default with every Linear/Conv1D whose name matches one; `ignore` (regexes) drops matches.
    If `model` has no block stack (e.g. a single block passed directly), its own layers are used.

    >>> find_prunable(model, ignore=[r"\\.mlp\\."])   # attention projections only
    """
    target_patterns, ignore_patterns = _compile(targets), _compile(ignore)
    block_prefixes = [name + "." for name, _ in find_block_stacks(model)]
    found = {}
    for name, module in model.named_modules():
        if not is_prunable(module):
            continue
        if target_patterns:
            selected = _matches(name, target_patterns)
        else:
            selected = not block_prefixes or any(name.startswith(p) for p in block_prefixes)
        if selected and not _matches(name, ignore_patterns):
            found[name] = module
    return found


def modules_named(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """The named submodules of `model`, in the order given; a KeyError lists names it does not have.

    >>> modules_named(model, masks)["model.layers.0.mlp.up_proj"]
    Linear(in_features=64, out_features=128, bias=False)
    """
    by_name = dict(model.named_modules())
    names = list(names)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(f"masks name layers the model does not have: {missing[:5]}")
    return {n: by_name[n] for n in names}
