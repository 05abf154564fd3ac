"""GPTQ for the output projection (lm_head / proj_out): int4 (a scale per row and 128 columns, the
runtime's `int4` grid) or int8 (a scale per row).

Round-to-nearest int4 costs SmolLM2-135M's tied 49152 x 576 head +12% gsm / +30% austen perplexity;
GPTQ, with the Hessian of the head's own inputs (the final hidden states of the model as quantized so
far, on the calibration batches), +3% / +5% (`experiments/int4_head_gptq.py`). The head is untied from
the input embedding first (the lookup keeps full precision); its fake-quantized weight is written into
the model, and the returned `HeadQuant` (scales included) is what the quantized folder records and the
compress stage reads back to store exactly these codes.

    >>> hq = quantize_head(model, batches, "int4")
    >>> hq.name, hq.fmt, tuple(hq.scales.shape)
    ('lm_head', 'int4', (49152, 5))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sparseft.errors import ConfigError
from sparseft.models.head import output_projection, untie_output_projection
from sparseft.models.hooks import run_with_hooks
from sparseft.prune.token_masks import real_rows, stack_token_masks
from sparseft.quant.gptq import gptq_quantize, gptq_quantize_groups

HEAD_FORMATS = ("int4", "int8")


@dataclass(frozen=True)
class HeadQuant:
    """The quantized head: its module name, value format, scales (int4: (out, groups); int8: (out,)) and
    GPTQ's output error on the calibration inputs."""

    name: str
    fmt: str
    scales: Tensor
    error: float

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.fmt, "output_error": self.error}


def head_hessian(model: nn.Module, batches: Iterable[Mapping[str, Any]]) -> Tensor:
    """H = 2/n sum x x^T (in, in) over the output projection's inputs, every real token of `batches`
    (padding left out, as in the blocks' statistics: `sparseft.prune.token_masks`)."""
    _, head = output_projection(model)
    width = head.weight.shape[1]
    acc: dict[str, Any] = {"H": torch.zeros(width, width, dtype=torch.float64), "n": 0, "real": None}

    def record(module: nn.Module, args: tuple) -> None:
        x = real_rows(args[0].detach(), acc["real"]).reshape(-1, width).double()
        acc["H"] += x.T @ x
        acc["n"] += x.shape[0]

    with torch.no_grad():
        for batch in batches:
            acc["real"] = stack_token_masks(model, batch, "decoder").hidden
            run_with_hooks(model, {head: record}, [batch], pre=True)
    if acc["n"] == 0:
        raise ConfigError("the head's GPTQ needs calibration batches; none were given")
    return (2 * acc["H"] / acc["n"]).float()


def quantize_head(model: nn.Module, batches: Iterable[Mapping[str, Any]], fmt: str, percdamp: float = 0.01) -> HeadQuant:
    """Untie the output projection, GPTQ-quantize it to `fmt` (int4 or int8) in place (fake-quant weight)."""
    if fmt not in HEAD_FORMATS:
        raise ConfigError(f"the head quantizes to one of {', '.join(HEAD_FORMATS)}, not {fmt!r}")
    name, _ = output_projection(model)
    H = head_hessian(model, batches)
    head = untie_output_projection(model)
    W = head.weight.detach().float()
    if fmt == "int4":
        res = gptq_quantize_groups(W, H, percdamp=percdamp)
        scales = res.scale
    else:
        res = gptq_quantize(W, H, percdamp=percdamp)
        scales = res.scale.reshape(-1)
    with torch.no_grad():
        head.weight.copy_(res.weight.to(head.weight.dtype))
    return HeadQuant(name, fmt, scales.contiguous(), res.error)
