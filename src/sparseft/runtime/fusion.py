"""Fuse sibling projections that read the same input (q/k/v, gate/up) into one layer.

    >>> fuse_projections(model)        # in place; returns the fused groups
    ['model.layers.0.self_attn.{q_proj,k_proj,v_proj}', 'model.layers.0.mlp.{gate_proj,up_proj}', ...]
    >>> fuse_projections(whisper)      # cross-attention: only k/v (they read the encoder's states)
    [..., 'model.decoder.layers.0.encoder_attn.{k_proj,v_proj}', ...]

In a decoder's cross-attention the query reads the decoder's states but the keys and values read the
encoder's (computed once per sequence and cached), so fusing q with k/v would compute the k/v rows at
every decode step for nothing (and q's rows over the whole encoder output once). Cross-attention modules
are recognised by their name in their parent (``CROSS_ATTENTION``: encoder_attn of Whisper/BART/Marian,
EncDecAttention of T5, ...) or an ``is_cross_attention`` attribute; they get ``CROSS_SIBLINGS``.

The fused layer holds the rows of its siblings one after the other (``concat_rows``: the same stored
values, mask bits and int8 scales), so each output is computed exactly as before, with one kernel call
(and one preparation of x) instead of three. Each sibling is replaced by a ``FusedSibling`` that returns
its part of the fused output; the first sibling called with a given input tensor computes all parts.

A fused model computes the same function but its state dict has other names (``q_proj.group.fused.*``):
save checkpoints before fusing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime.format import PAD_BYTES, CompressedWeight
from sparseft.runtime.linear import SparseLinear, WeightInfo

# Children of one module that read the same input: Llama, Qwen2, Mistral, Whisper, BART, OPT, ... naming,
# then T5's (attention q/k/v, gated feed-forward wi_0/wi_1).
SIBLINGS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("q", "k", "v"), ("wi_0", "wi_1"),
)  # fmt: skip
# In a cross-attention module only the keys and values read the same (encoder) states.
CROSS_SIBLINGS: tuple[tuple[str, ...], ...] = (("k_proj", "v_proj"), ("k", "v"))
# Names under which encoder-decoder models hold their cross-attention (Whisper, BART, Marian, M2M100,
# SpeechT5, TrOCR: encoder_attn; T5, mT5, LongT5: EncDecAttention; BERT-style decoders: crossattention).
CROSS_ATTENTION = frozenset(
    {"encoder_attn", "EncDecAttention", "crossattention", "cross_attn", "cross_attention"}
)


def concat_rows(cws: Sequence[CompressedWeight]) -> CompressedWeight:
    """One CompressedWeight whose rows are those of ``cws`` in order (same fmt, index and in_features).

    >>> cat = concat_rows([compress(w1, "int8"), compress(w2, "int8")])
    >>> torch.equal(cat.decompress(), torch.cat([compress(w1, "int8").decompress(), compress(w2, "int8").decompress()]))
    True
    """
    first = cws[0]
    if any((cw.fmt, cw.index, cw.shape[1]) != (first.fmt, first.index, first.shape[1]) for cw in cws):
        raise ConfigError("concat_rows needs weights of the same value type, index and in_features")
    fmt = first.format
    values = fmt.pack(torch.cat([fmt.unpack(cw.values, cw.nnz) for cw in cws]))
    if first.index == "delta":  # one uint8 gap per stored value, padded like the values
        mask = torch.cat([*(cw.mask[: cw.nnz] for cw in cws), torch.zeros(PAD_BYTES, dtype=first.mask.dtype)])
    else:
        mask = torch.cat([cw.mask for cw in cws])
    offsets = torch.tensor([0] + [cw.nnz for cw in cws]).cumsum(0)
    rowptr = torch.cat(
        [first.rowptr[:1]] + [cw.rowptr[1:] + int(o) for cw, o in zip(cws, offsets, strict=False)]
    )
    scales = torch.cat([cw.scales for cw in cws])
    m = sum(cw.shape[0] for cw in cws)
    return CompressedWeight(
        first.fmt, (m, first.shape[1]), mask.contiguous(), values, rowptr, scales, first.index
    )


class FusedGroup(nn.Module):
    """The fused layer of a group of siblings; ``part(x, i)`` computes fused(x) once per input tensor."""

    def __init__(self, fused: nn.Module, sizes: Sequence[int]) -> None:
        super().__init__()
        self.fused = fused
        self.sizes = list(sizes)
        self._x: torch.Tensor | None = None
        self._version = -1
        self._parts: tuple[torch.Tensor, ...] = ()

    def part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Part ``i`` of fused(x); computed when x is not the tensor (at the same version) seen last."""
        compiling = torch.compiler.is_compiling()  # traced: a tensor is not changed in place between siblings
        if self._x is not x or (not compiling and self._version != x._version):
            self._parts = self.fused(x).split(self.sizes, dim=-1)
            self._x, self._version = x, (-1 if compiling else x._version)
        out = self._parts[i]
        if i == len(self.sizes) - 1:  # last sibling: drop the references (and keep compiled guards stable)
            self._x, self._parts = None, ()
        return out


class FusedSibling(nn.Module):
    """Stands in for one fused layer (e.g. k_proj): part ``index`` of its group's output."""

    def __init__(self, group: FusedGroup, index: int, in_features: int, out_features: int) -> None:
        super().__init__()
        if index == 0:
            self.group = group  # registered once, so the fused weight is in the state dict once
        else:
            object.__setattr__(self, "group", group)
        self.index = index
        self.in_features, self.out_features = in_features, out_features

    @property
    def weight(self) -> WeightInfo:
        """Shape / dtype / device of this part's weight, for code written for nn.Linear (no tensor)."""
        fused = self.group.fused.weight  # a Tensor (dense) or the SparseLinear's WeightInfo: both say dtype, device
        return WeightInfo(torch.Size((self.out_features, self.in_features)), fused.dtype, fused.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.part(x, self.index)

    def extra_repr(self) -> str:
        return f"part {self.index} of a fused group, out_features={self.out_features}"


def _fused_dense(layers: Sequence[nn.Linear]) -> nn.Linear | None:
    w = [m.weight for m in layers]
    if len({(t.dtype, t.device) for t in w}) != 1:
        return None
    has_bias = any(m.bias is not None for m in layers)  # a sibling without bias (Whisper's k_proj) adds 0
    lin = nn.Linear(
        w[0].shape[1], sum(t.shape[0] for t in w), bias=has_bias, dtype=w[0].dtype, device=w[0].device
    )
    with torch.no_grad():
        lin.weight.copy_(torch.cat(w))
        if has_bias:
            biases = [m.weight.new_zeros(m.out_features) if m.bias is None else m.bias for m in layers]
            lin.bias.copy_(torch.cat(biases))
    return lin.requires_grad_(False)


def _fused_sparse(layers: Sequence[SparseLinear]) -> SparseLinear | None:
    first = layers[0]
    key = (first.fmt, first.index, first.act, first.static_scale)
    if any((m.fmt, m.index, m.act, m.static_scale) != key for m in layers):
        return None
    bias = None
    if any(m.bias is not None for m in layers):
        bias = torch.cat([m.bias if m.bias is not None else torch.zeros(m.out_features) for m in layers])
    scale = first.input_scale if first.act == "static-int8" else None
    return SparseLinear(concat_rows([m.compressed() for m in layers]), bias, first.act, scale)


def fused_layer(layers: Sequence[nn.Module]) -> nn.Module | None:
    """The fused replacement of ``layers``, or None when they cannot be fused exactly."""
    if len({m.in_features for m in layers}) != 1:
        return None
    if all(type(m) is nn.Linear for m in layers):
        return _fused_dense(layers)
    if all(isinstance(m, SparseLinear) for m in layers):
        return _fused_sparse(layers)
    return None


def _tied_ids(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def is_cross_attention(name: str, module: nn.Module) -> bool:
    """True for an attention module whose queries and keys/values read different states (see module doc)."""
    return name.rpartition(".")[2] in CROSS_ATTENTION or getattr(module, "is_cross_attention", False) is True


@torch.no_grad()
def fuse_projections(
    model: nn.Module,
    siblings: Sequence[Sequence[str]] = SIBLINGS,
    cross_siblings: Sequence[Sequence[str]] = CROSS_SIBLINGS,
) -> list[str]:
    """Fuse each group of sibling Linears (``siblings``: child names of one module that read the same
    input; ``cross_siblings`` in a cross-attention module) into one layer, in place; returns the fused
    groups as "parent.{a,b,c}".

    Fused: all SparseLinear with the same value type, index and activation mode, or all dense nn.Linear
    of one dtype. Layers whose weight is shared with another parameter (tied) are left alone."""
    tied = _tied_ids(model)
    done = []
    for parent_name, parent in list(model.named_modules()):
        groups = cross_siblings if is_cross_attention(parent_name, parent) else siblings
        for names in groups:
            layers = [getattr(parent, n, None) for n in names]
            if any(not isinstance(m, nn.Module) for m in layers):
                continue
            if any(id(getattr(m, "weight", None)) in tied for m in layers):
                continue
            fused = fused_layer(layers)
            if fused is None:
                continue
            group = FusedGroup(fused, [m.out_features for m in layers])
            for i, (n, m) in enumerate(zip(names, layers, strict=True)):
                setattr(parent, n, FusedSibling(group, i, m.in_features, m.out_features))
            done.append(f"{parent_name}.{{{','.join(names)}}}")
    return done
