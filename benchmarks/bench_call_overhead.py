"""Per-call time of a small SparseLinear at batch 1: eager (direct kernel call) and the compiled path's
``sparseft::linear`` op called through the dispatcher. Decode calls ~120 such layers per token, so the
fixed cost per call matters as much as the kernel.

    python benchmarks/bench_call_overhead.py            # 576x576 and 64x64, 70% zeros, 1 thread
    python benchmarks/bench_call_overhead.py --size 128

Best of 25 rounds of the calling thread's CPU time (a busy neighbour does not inflate it).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from sparseft.runtime import SparseLinear


def best_us(fn: Callable[[], object], calls: int = 3000, rounds: int = 25) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - t) / calls)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs="+", default=[576, 64])
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for d in args.size:
        torch.manual_seed(0)
        lin = nn.Linear(d, d)
        with torch.no_grad():
            lin.weight.mul_(torch.rand(d, d) > 0.7)
        x = torch.randn(1, d)
        for fmt, act in (("fp32", "none"), ("bf16", "none"), ("int8", "none"), ("int8", "dynamic-int8")):
            layer = SparseLinear.from_dense(lin, fmt, act=act)
            with torch.no_grad():
                eager = best_us(lambda layer=layer, x=x: layer(x), args.calls)
                op = best_us(lambda lay=layer, x=x, d=d: torch.ops.sparseft.linear(x, lay.op_id, d), args.calls)
            print(f"{d}x{d} {fmt}/{act}: eager {eager:.2f} us, op {op:.2f} us")


if __name__ == "__main__":
    main()
