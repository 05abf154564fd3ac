"""Kernel sweep: sparse bitmask kernels vs dense PyTorch, measured in the same run.

    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py            # full sweep (~20 min)
    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py --quick    # targets only (~3 min)

For every (shape, sparsity, batch, threads) it times y = x W^T with: torch fp32 F.linear, torch bf16
F.linear, torch dense int8 (quantize_dynamic), and the sparse kernels with fp32, bf16 and int8 values
(interleaved rounds, best of 7, so other processes disturb all candidates alike). It reports speed-ups
vs torch fp32, effective GB/s (bytes of weights read / time) and the fraction of the bytes-bound limit
(read bandwidth measured in the same run). Results go to benchmarks/results/kernels.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparseft.runtime import compress, set_num_threads
from sparseft.runtime.kernels import best_isa, matmul_raw, row_sums
from sparseft.runtime.timing import bandwidth_gbs, best_times

SHAPES = [(576, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
SPARSITIES = [0.5, 0.7, 0.8, 0.9]
BATCHES = [1, 4, 16, 128]
FORMATS = ["fp32", "bf16", "int8"]
RESULTS = Path(__file__).parent / "results"


def dense_int8(w: torch.Tensor) -> nn.Module:
    """torch's dense int8 baseline: dynamic quantization of an nn.Linear."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)


def sparse_fn(x: torch.Tensor, cw, copies: int = 1) -> callable:
    rs = row_sums(cw)
    ws = [cw] + [
        dataclasses.replace(cw, mask=cw.mask.clone(), values=cw.values.clone()) for _ in range(copies - 1)
    ]
    return rotating(
        [
            lambda c=c: matmul_raw(x, c.fmt, c.shape, c.mask, c.values, c.rowptr, c.scales, rs, None)
            for c in ws
        ]
    )


def rotating(fns: list) -> callable:
    """Call fns[0], fns[1], ... in turn: with enough copies no weight is still in a cache when reused."""
    it = itertools.cycle(fns)
    return lambda: next(it)()


def n_copies(nbytes: int, rotate_mb: float) -> int:
    return max(1, math.ceil(rotate_mb * 1e6 / nbytes))


def bench_point(
    w: torch.Tensor, sparsity: float, batch: int, seconds: float, clock: str = "wall", rotate_mb: float = 0.0
) -> dict:
    """Time every candidate for one weight / batch; returns a result record."""
    m, k = w.shape
    ws = w * (torch.rand(m, k) >= sparsity)
    x = torch.randn(batch, k)
    cws = {f: compress(ws, f) for f in FORMATS}
    xb = x.bfloat16()
    n32, n16, n8 = (n_copies(m * k * b, rotate_mb) for b in (4, 2, 1))
    w32 = [w] + [w.clone() for _ in range(n32 - 1)]
    w16 = [w.bfloat16() for _ in range(n16)]
    q8 = [dense_int8(w) for _ in range(n8)]
    fns = {
        "torch_fp32": rotating([lambda w=w: F.linear(x, w) for w in w32]),
        "torch_bf16": rotating([lambda w=w: F.linear(xb, w) for w in w16]),
        "torch_int8": rotating([lambda q=q: q(x) for q in q8]),
    }
    fns.update({f"sparse_{f}": sparse_fn(x, cw, n_copies(cw.nbytes(), rotate_mb)) for f, cw in cws.items()})
    t = best_times(fns, seconds=seconds, clock=clock)
    nbytes = {"torch_fp32": 4 * m * k, "torch_bf16": 2 * m * k, "torch_int8": m * k}
    nbytes.update({f"sparse_{f}": cw.nbytes() for f, cw in cws.items()})
    return {
        "shape": [m, k], "sparsity": sparsity, "batch": batch, "threads": torch.get_num_threads(),
        "ms": {n: 1e3 * s for n, s in t.items()},
        "speedup_vs_torch_fp32": {n: t["torch_fp32"] / s for n, s in t.items()},
        "speedup_vs_torch_int8": {n: t["torch_int8"] / s for n, s in t.items()},
        "bytes": nbytes,
        "gbs": {n: nbytes[n] / s / 1e9 for n, s in t.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the points the targets name")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--shapes", nargs="+", default=None, help="OUTxIN shapes (default: the five of the issue)"
    )
    ap.add_argument("--seconds", type=float, default=1.5, help="measuring time per point (all candidates)")
    ap.add_argument("--out", type=Path, default=RESULTS / "kernels.json")
    ap.add_argument(
        "--rotate-mb", type=float, default=0.0,
        help="cycle through copies of each weight totalling this many MB, so repeated calls read from DRAM "
        "rather than from a cache (0: one copy, as in a hot loop)",
    )  # fmt: skip
    ap.add_argument(
        "--clock", choices=["wall", "thread"], default="wall",
        help="thread: CPU time of the calling thread (1 thread only; leaves out waits for a busy CPU)",
    )  # fmt: skip
    args = ap.parse_args()
    if os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive":
        print("warning: set OMP_WAIT_POLICY=passive, or torch with 2 threads is slowed by spinning")
    shapes = [(4096, 4096), (11008, 4096)] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shapes]
    sparsities = [0.7] if args.quick else SPARSITIES
    batches = [1, 16, 128] if args.quick else BATCHES
    records, bandwidth = [], {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        bandwidth[threads] = bandwidth_gbs()
        print(f"threads {threads}: read bandwidth {bandwidth[threads]:.1f} GB/s", flush=True)
        for m, k in shapes:
            w = torch.randn(m, k) / k**0.5
            for sp in sparsities:
                for batch in batches:
                    clock = args.clock if threads == 1 else "wall"
                    rec = bench_point(w, sp, batch, args.seconds, clock, args.rotate_mb)
                    rec.update(clock=clock, rotate_mb=args.rotate_mb)
                    rec["bytes_bound_fraction"] = {n: g / bandwidth[threads] for n, g in rec["gbs"].items()}
                    records.append(rec)
                    write(args.out, records, bandwidth)  # after every point: a long sweep can be stopped
                    s = rec["speedup_vs_torch_fp32"]
                    print(
                        f"{m}x{k} sp={sp:.0%} b={batch} t={threads}: torch fp32 {rec['ms']['torch_fp32']:.3f} ms; "
                        + " ".join(
                            f"{n.replace('sparse_', '')} {v:.2f}x" for n, v in s.items() if n != "torch_fp32"
                        ),
                        flush=True,
                    )
    print(f"wrote {args.out}")


def write(out: Path, records: list[dict], bandwidth: dict[int, float]) -> None:
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": platform.processor() or platform.machine(),
        "isa": best_isa(), "torch": torch.__version__, "read_bandwidth_gbs": bandwidth,
        "timing": "interleaved rounds, best of 7 (clock per record)", "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": records}, indent=1))


if __name__ == "__main__":
    main()
