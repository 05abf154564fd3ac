"""Fixtures of the runtime tests: each ISA path the CPU can run."""

from __future__ import annotations

import pytest

from sparseft.runtime.kernels import ISAS, best_isa

AVAILABLE_ISAS = [isa for isa in ISAS if ISAS.index(isa) <= ISAS.index(best_isa())]


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    if request.param not in AVAILABLE_ISAS:
        pytest.skip(f"this CPU cannot run the {request.param} path")
    return request.param
