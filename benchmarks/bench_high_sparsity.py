"""High sparsity: bitmask vs delta index at 90-99% zeros, batch 1, vs torch fp32 in the same run.

    OMP_WAIT_POLICY=passive python benchmarks/bench_high_sparsity.py

Above ~90% zeros the bitmask (1 bit per weight) outweighs the values; the delta index stores one byte
per value instead. Results: benchmarks/results/high_sparsity.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from sparseft.runtime import compress, set_num_threads, sparse_matmul
from sparseft.runtime.timing import best_times

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    torch.set_num_threads(1)
    set_num_threads(1)
    records = []
    m = k = 4096
    w = torch.randn(m, k)
    x = torch.randn(1, k)
    for sp in (0.9, 0.95, 0.99):
        ws = w * (torch.rand(m, k) >= sp)
        fns = {"torch_fp32": lambda: F.linear(x, w)}
        nbytes = {"torch_fp32": 4 * m * k}
        for fmt in ("fp32", "int8"):
            for index in ("bitmask", "delta"):
                cw = compress(ws, fmt, index=index)
                fns[f"{fmt}_{index}"] = lambda cw=cw: sparse_matmul(x, cw)
                nbytes[f"{fmt}_{index}"] = cw.nbytes()
        t = best_times(fns, seconds=3.0)
        rec = {"shape": [m, k], "sparsity": sp, "batch": 1, "threads": 1, "ms": {n: v * 1e3 for n, v in t.items()},
               "speedup_vs_torch_fp32": {n: t["torch_fp32"] / v for n, v in t.items()}, "bytes": nbytes}  # fmt: skip
        records.append(rec)
        print(
            f"{sp:.0%}: "
            + " ".join(
                f"{n} {s:.2f}x ({nbytes[n] / 1e6:.1f} MB)" for n, s in rec["speedup_vs_torch_fp32"].items()
            )
        )
    (RESULTS / "high_sparsity.json").write_text(json.dumps({"results": records}, indent=1))


if __name__ == "__main__":
    main()
