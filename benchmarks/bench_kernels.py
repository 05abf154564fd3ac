"""Kernel sweep: sparse bitmask kernels vs dense PyTorch, measured in the same run.

    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py            # full sweep (~20 min)
    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py --quick    # targets only (~3 min)
    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py --batches 4 16 128 --median \
        --out benchmarks/results/kernels_batch_amx.json                    # batch > 1 rows (AMX)
    OMP_WAIT_POLICY=passive python benchmarks/bench_kernels.py --amx-crossover   # AMX vs AVX-512, batch 1-8

For every (shape, sparsity, batch, threads) it times y = x W^T with: torch fp32 F.linear, torch bf16
F.linear, torch dense int8 (quantize_dynamic), and the sparse kernels with fp32, bf16 and int8 values
(interleaved rounds, so other processes disturb all candidates alike; best of 7, or with --median the
median of 9 rounds plus the median process CPU time). On a CPU with AMX, the bf16 / int8 sparse
candidates run whatever kernel the runtime picks (AMX from ``AMX_MIN_BATCH`` rows on) and two more,
``sparse_bf16_avx512`` / ``sparse_int8_avx512``, run with AMX off. It reports speed-ups vs torch fp32,
effective GB/s (bytes of weights read / time) and the fraction of the bytes-bound limit (read bandwidth
measured in the same run). Results go to benchmarks/results/kernels.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparseft.runtime import best_isa, compress, format_names, linear, pack_weight, set_num_threads
from sparseft.runtime.isa import AMX_MIN_BATCH, amx_available, amx_used, forced_amx
from sparseft.runtime.timing import CLOCKS, bandwidth_gbs, best_times

SHAPES = [(576, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
SPARSITIES = [0.5, 0.7, 0.8, 0.9]
BATCHES = [1, 4, 16, 128]
FORMATS = [f for f in format_names() if f != "fp16"]  # the registry's formats measured so far (fp16: new)
RESULTS = Path(__file__).parent / "results"


def dense_int8(w: torch.Tensor) -> nn.Module:
    """torch's dense int8 baseline: dynamic quantization of an nn.Linear."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)


def sparse_fn(x: torch.Tensor, cw, copies: int = 1, amx: str = "auto") -> callable:
    """The sparse kernel on x with cw (``amx``: the AMX mode during the call; "auto" = the runtime's choice)."""
    ws = [cw] + [
        dataclasses.replace(cw, mask=cw.mask.clone(), values=cw.values.clone()) for _ in range(copies - 1)
    ]
    handles = [pack_weight(c) for c in ws]  # packed once, as a SparseLinear does

    def call(h):  # noqa: ANN001, ANN202
        with forced_amx(amx):
            return linear(x, h)

    return rotating([lambda h=h: call(h) for h in handles])


def median_times(
    fns: dict[str, callable], seconds: float = 1.0, rounds: int = 9, clock: str = "wall"
) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds per call by ``clock``, median process CPU seconds per call) of each function,
    measured in ``rounds`` interleaved rounds (A B C A B C ...). Process CPU time counts every thread of
    this process (the kernels' pool and torch's), not the time spent waiting for a busy CPU."""
    tick = CLOCKS[clock]
    reps = {}
    for name, fn in fns.items():  # warm up and size each round to ~seconds / rounds / len(fns)
        fn()
        t0 = time.perf_counter()
        fn()
        reps[name] = max(1, int(seconds / rounds / len(fns) / max(time.perf_counter() - t0, 1e-7)))
    samples = {n: [] for n in fns}
    cpu = {n: [] for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = tick(), time.process_time()
            for _ in range(reps[name]):
                fn()
            samples[name].append((tick() - t0) / reps[name])
            cpu[name].append((time.process_time() - c0) / reps[name])
    med = statistics.median
    return {n: med(v) for n, v in samples.items()}, {n: med(v) for n, v in cpu.items()}


def rotating(fns: list) -> callable:
    """Call fns[0], fns[1], ... in turn: with enough copies no weight is still in a cache when reused."""
    it = itertools.cycle(fns)
    return lambda: next(it)()


def n_copies(nbytes: int, rotate_mb: float) -> int:
    return max(1, math.ceil(rotate_mb * 1e6 / nbytes))


def bench_point(
    w: torch.Tensor,
    sparsity: float,
    batch: int,
    seconds: float,
    clock: str = "wall",
    rotate_mb: float = 0.0,
    median: bool = False,
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
    amx = {f: amx_used(f, batch, k) for f in cws}
    for f, cw in cws.items():  # the same weights on the AVX-512 kernels, where AMX took over
        if amx[f]:
            fns[f"sparse_{f}_avx512"] = sparse_fn(x, cw, n_copies(cw.nbytes(), rotate_mb), amx="off")
    cpu = None
    if median:
        t, cpu = median_times(fns, seconds=seconds, clock=clock)
    else:
        t = best_times(fns, seconds=seconds, clock=clock)
    nbytes = {"torch_fp32": 4 * m * k, "torch_bf16": 2 * m * k, "torch_int8": m * k}
    nbytes.update({f"sparse_{f}": cw.nbytes() for f, cw in cws.items()})
    nbytes.update({f"sparse_{f}_avx512": cw.nbytes() for f, cw in cws.items()})
    rec = {
        "shape": [m, k], "sparsity": sparsity, "batch": batch, "threads": torch.get_num_threads(),
        "timing": "median of 9 rounds" if median else "best of 7 rounds", "amx": amx,
        "ms": {n: 1e3 * s for n, s in t.items()},
        "speedup_vs_torch_fp32": {n: t["torch_fp32"] / s for n, s in t.items()},
        "speedup_vs_torch_int8": {n: t["torch_int8"] / s for n, s in t.items()},
        "bytes": {n: nbytes[n] for n in t},
        "gbs": {n: nbytes[n] / s / 1e9 for n, s in t.items()},
    }  # fmt: skip
    if cpu is not None:
        rec["cpu_ms"] = {n: 1e3 * s for n, s in cpu.items()}
        rec["cpu_speedup_vs_torch_fp32"] = {n: cpu["torch_fp32"] / s for n, s in cpu.items()}
    return rec


def amx_crossover(args: argparse.Namespace) -> None:
    """bf16 / int8 sparse kernels with AMX on vs off at small batches: where AMX_MIN_BATCH comes from."""
    if not amx_available():
        raise SystemExit("no AMX on this machine: nothing to compare")
    records = []
    shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shapes] if args.shapes else SHAPES
    for threads in args.threads:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        for m, k in shapes:
            w = torch.randn(m, k) / k**0.5
            ws = w * (torch.rand(m, k) >= 0.7)
            cws = {f: compress(ws, f) for f in ("bf16", "int8")}
            for batch in args.batches or [1, 2, 3, 4, 6, 8]:
                x = torch.randn(batch, k)
                fns = {
                    f"{f}_{mode}": sparse_fn(x, cw, amx=mode)
                    for f, cw in cws.items()
                    for mode in ("on", "off")
                }
                t, cpu = median_times(fns, seconds=args.seconds, clock=args.clock if threads == 1 else "wall")
                rec = {"shape": [m, k], "sparsity": 0.7, "batch": batch, "threads": threads,
                       "ms": {n: 1e3 * v for n, v in t.items()}, "cpu_ms": {n: 1e3 * v for n, v in cpu.items()},
                       "amx_gain": {f: t[f"{f}_off"] / t[f"{f}_on"] for f in cws},
                       "amx_gain_cpu": {f: cpu[f"{f}_off"] / cpu[f"{f}_on"] for f in cws}}  # fmt: skip
                records.append(rec)
                write(args.out, records, {}, {"amx_min_batch": AMX_MIN_BATCH})
                g = rec["amx_gain"]
                print(
                    f"{m}x{k} b={batch} t={threads}: AMX/AVX-512 speed-up bf16 {g['bf16']:.2f}x int8 {g['int8']:.2f}x"
                )


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
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 4 16 128)")
    ap.add_argument("--sparsities", type=float, nargs="+", default=None, help="default 0.5 0.7 0.8 0.9")
    ap.add_argument("--median", action="store_true", help="median of 9 rounds (+ process CPU time)")
    ap.add_argument("--amx-crossover", action="store_true", help="AMX vs AVX-512 kernels at batch 1-8")
    args = ap.parse_args()
    if args.amx_crossover:
        if args.out == RESULTS / "kernels.json":
            args.out = RESULTS / "kernels_amx_crossover.json"
        amx_crossover(args)
        return
    if os.environ.get("OMP_WAIT_POLICY", "").lower() != "passive":
        print("warning: set OMP_WAIT_POLICY=passive, or torch with 2 threads is slowed by spinning")
    shapes = [(4096, 4096), (11008, 4096)] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shapes]
    sparsities = args.sparsities or ([0.7] if args.quick else SPARSITIES)
    batches = args.batches or ([1, 16, 128] if args.quick else BATCHES)
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
                    rec = bench_point(w, sp, batch, args.seconds, clock, args.rotate_mb, args.median)
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


def write(out: Path, records: list[dict], bandwidth: dict[int, float], extra: dict | None = None) -> None:
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": platform.processor() or platform.machine(),
        "isa": best_isa(), "amx": amx_available(), "amx_min_batch": AMX_MIN_BATCH, "torch": torch.__version__,
        "read_bandwidth_gbs": bandwidth, "load_average": os.getloadavg(),
        "timing": "interleaved rounds (clock and statistic per record)", "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }  # fmt: skip
    meta.update(extra or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": records}, indent=1))


if __name__ == "__main__":
    main()
