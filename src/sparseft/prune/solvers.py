"""The solvers of the sequential driver, by name: what each needs from the data, and its pure solve.

A solver turns one layer's (out, in) weight and the statistics of its calibration inputs into a new
weight and a keep-mask. It declares which statistics it needs (`Needs`), so the driver collects
exactly those; the math itself lives in pure functions on tensors (`sparsegpt.py`, `wanda.py`,
`magnitude.py`, `sparseft.quant.gptq`). Adding a method is registering one solver:

    >>> def solve_random(p: LayerProblem, s: SolveSettings) -> Solution:
    ...     mask = torch.rand_like(p.W) >= s.sparsity
    ...     return Solution(p.W * mask, mask)
    >>> register_solver(Solver("random", "prune", Needs(hessian="sample"), solve_random))
    >>> oneshot(model, batches, method="random")        # METHODS and the CLI's choices now list it

Kinds: "prune" solvers choose the mask (`oneshot`); "quantize" solvers keep the mask they are given
(`LayerProblem.mask`) and put the weight on an int8 grid (`quantize_model(..., method="gptq")`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sparseft.errors import ConfigError
from sparseft.prune.magnitude import magnitude_mask
from sparseft.prune.sparsegpt import sparsegpt_prune
from sparseft.prune.wanda import wanda_mask

KINDS = ("prune", "quantize")
HESSIAN_NEEDS = ("all", "sample")


@dataclass(frozen=True)
class Needs:
    """What a solver needs from each layer's calibration inputs.

    `hessian`: "all" = H = 2/n sum x x^T on every batch (the solve uses it); "sample" = H only for
    the error report, on the first `error_batches` batches. `norms`: the mean of x_j^2 on every batch.
    """

    hessian: str = "sample"
    norms: bool = False

    def __post_init__(self) -> None:
        if self.hessian not in HESSIAN_NEEDS:
            raise ValueError(f"Needs.hessian must be one of {HESSIAN_NEEDS}, got {self.hessian!r}")

    @property
    def data(self) -> bool:
        """True when the solve itself needs calibration data (not just its error report)."""
        return self.hessian == "all" or self.norms


@dataclass(frozen=True)
class SolveSettings:
    """The knobs of the solvers: target sparsity or N:M (pruning), OBS block size and dampening."""

    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    blocksize: int = 128
    percdamp: float = 0.01


@dataclass(frozen=True)
class LayerProblem:
    """One layer to solve: `W` (out, in) fp32 (a copy), `H` (in, in) or None, `norm_sq` (in,) or None,
    and the fixed (out, in) keep-mask of a quantizing solver (None: pruning chooses it)."""

    W: Tensor
    H: Tensor | None = None
    norm_sq: Tensor | None = None
    mask: Tensor | None = None


@dataclass(frozen=True)
class Solution:
    """The new (out, in) weight `W`, its keep-mask, and the int8 scales (out, 1) of a quantizing solver."""

    W: Tensor
    mask: Tensor
    scale: Tensor | None = None


@dataclass(frozen=True)
class Solver:
    """A named method of the sequential driver: its kind, what it needs, and its pure solve function."""

    name: str
    kind: str
    needs: Needs
    solve: Callable[[LayerProblem, SolveSettings], Solution]


SOLVERS: dict[str, Solver] = {}


def register_solver(solver: Solver) -> Solver:
    """Make `solver` available to the driver under `solver.name` (replacing one of that name)."""
    if solver.kind not in KINDS:
        raise ValueError(f"solver kind must be one of {KINDS}, got {solver.kind!r}")
    SOLVERS[solver.name] = solver
    return solver


def method_names(kind: str = "prune") -> tuple[str, ...]:
    """Names of the registered solvers of `kind`, in registration order."""
    return tuple(name for name, solver in SOLVERS.items() if solver.kind == kind)


def get_solver(name: str, kind: str = "prune") -> Solver:
    """The registered solver `name` of `kind`; a ConfigError lists the choices otherwise."""
    solver = SOLVERS.get(name)
    if solver is None or solver.kind != kind:
        raise ConfigError(f"method must be one of {', '.join(method_names(kind))}, got {name!r}")
    return solver


def solve_sparsegpt(p: LayerProblem, s: SolveSettings) -> Solution:
    res = sparsegpt_prune(p.W, p.H, s.sparsity, nm=s.nm, blocksize=s.blocksize, percdamp=s.percdamp)
    return Solution(res.weight, res.mask)


def solve_wanda(p: LayerProblem, s: SolveSettings) -> Solution:
    mask = wanda_mask(p.W, p.norm_sq, s.sparsity, s.nm)
    return Solution(p.W * mask, mask)


def solve_magnitude(p: LayerProblem, s: SolveSettings) -> Solution:
    mask = magnitude_mask(p.W, s.sparsity, s.nm)
    return Solution(p.W * mask, mask)


def solve_gptq(p: LayerProblem, s: SolveSettings) -> Solution:
    # Imported here: the sparseft.quant package imports its quantize path, which imports this driver.
    from sparseft.quant.gptq import gptq_quantize

    # Without a given mask the zeros of the weight are its mask: error compensation must not revive them.
    mask = p.mask if p.mask is not None else p.W != 0
    res = gptq_quantize(p.W, p.H, mask=mask, blocksize=s.blocksize, percdamp=s.percdamp)
    return Solution(res.weight, mask.to(torch.bool), res.scale)


register_solver(Solver("sparsegpt", "prune", Needs(hessian="all"), solve_sparsegpt))
register_solver(Solver("wanda", "prune", Needs(hessian="sample", norms=True), solve_wanda))
register_solver(Solver("magnitude", "prune", Needs(hessian="sample"), solve_magnitude))
register_solver(Solver("gptq", "quantize", Needs(hessian="all"), solve_gptq))
