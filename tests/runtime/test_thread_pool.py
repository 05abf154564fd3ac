"""The kernels' thread pool under contention: workers that join late, or never, must not change results.

The caller claims chunks along with the workers and returns once all are done, waiting only for workers
that joined (csrc/pool.c). Back-to-back small calls while another process keeps a core busy make
workers wake late, mid-job or after the job closed: every result must still equal the 1-thread one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from runtime_helpers import masked

from sparseft.runtime.format import compress
from sparseft.runtime.kernels import set_num_threads, sparse_matmul, sparse_matmul_w8a8


@pytest.fixture
def busy_core():
    """Another process spinning on one core for the duration of the test."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("threads", [2, 3])
def test_results_match_one_thread_under_contention(busy_core: None, threads: int) -> None:
    torch.manual_seed(0)
    cases = []
    for fmt, batch in (("fp32", 1), ("bf16", 1), ("int8", 1), ("bf16", 5), ("int8", 16), ("fp32", 40)):
        cw = compress(masked((96, 200), 0.7), fmt)
        cases.append((fmt, cw, torch.randn(batch, 200)))
    set_num_threads(1)
    try:
        ref = [sparse_matmul(x, cw) for _, cw, x in cases]
        ref_w8 = [sparse_matmul_w8a8(x, cw) for fmt, cw, x in cases if fmt == "int8"]
        set_num_threads(threads)
        for _ in range(300):  # many short jobs: late joins and closed jobs happen often
            for (_, cw, x), y in zip(cases, ref, strict=True):
                assert torch.equal(sparse_matmul(x, cw), y)
            w8 = [sparse_matmul_w8a8(x, cw) for fmt, cw, x in cases if fmt == "int8"]
            assert all(torch.equal(a, b) for a, b in zip(w8, ref_w8, strict=True))
    finally:
        set_num_threads(None)
