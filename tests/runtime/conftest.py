"""Fixtures of the runtime tests: each ISA path the CPU can run."""

from __future__ import annotations

import pytest

from sparseft.runtime.isa import SPMV_ORDERS, forced_spmv_order
from sparseft.runtime.kernels import ISAS, best_isa

AVAILABLE_ISAS = [isa for isa in ISAS if ISAS.index(isa) <= ISAS.index(best_isa())]


@pytest.fixture(params=[*ISAS[:-1], *(f"{ISAS[-1]}/{order}" for order in SPMV_ORDERS)])
def isa(request: pytest.FixtureRequest) -> str:
    """An ISA path; "avx512/ORDER": the AVX-512 path with the batch-1 int8 kernels walking rows in ORDER
    (both orders run on every AVX-512 CPU, whichever is its default; runtime/isa.py)."""
    name, _, order = request.param.partition("/")
    if name not in AVAILABLE_ISAS:
        pytest.skip(f"this CPU cannot run the {name} path")
    if not order:
        yield name
        return
    with forced_spmv_order(order):
        yield name
