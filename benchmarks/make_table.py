"""Print the markdown tables of BENCHMARKS.md from benchmarks/results/*.json.

python benchmarks/make_table.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FMTS = ["fp32", "bf16", "int8"]


def kernel_table(data: dict, threads: int, batch: int) -> str:
    rows = [r for r in data["results"] if r["threads"] == threads and r["batch"] == batch]
    head = "| shape | sparsity | torch fp32 ms | torch bf16 | torch int8 | sparse fp32 | sparse bf16 | sparse int8 | int8 vs torch int8 | GB/s fp32/bf16/int8 | bytes-bound fraction fp32/bf16/int8 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s, g, f = r["speedup_vs_torch_fp32"], r["gbs"], r["bytes_bound_fraction"]
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['sparsity']:.0%} | {r['ms']['torch_fp32']:.3f} | "
            f"{s['torch_bf16']:.2f}x | {s['torch_int8']:.2f}x | "
            + " | ".join(f"**{s['sparse_' + m]:.2f}x**" for m in FMTS)
            + f" | {r['speedup_vs_torch_int8']['sparse_int8']:.2f}x | "
            + "/".join(f"{g['sparse_' + m]:.1f}" for m in FMTS)
            + " | "
            + "/".join(f"{f['sparse_' + m]:.2f}" for m in FMTS)
            + " |"
        )
    return "\n".join(lines)


def e2e_table(data: dict) -> str:
    from bench_e2e import table  # the table of e2e.json's records (eager and prepared modes)

    return table(data)


def targets_table() -> str:
    """Target points (70%, 1 thread, 4096x4096 and 11008x4096) from the three kinds of run."""
    runs = [("sweep, wall", "kernels.json"), ("hot, CPU time", "kernels_targets_cputime.json"),
            ("DRAM, CPU time", "kernels_targets_rotated.json")]  # fmt: skip
    lines = ["| shape | batch | run | sparse fp32 | sparse bf16 | sparse int8 | int8 vs torch int8 | torch int8 | torch bf16 |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    data = {
        name: json.loads((RESULTS / f).read_text())["results"] for name, f in runs if (RESULTS / f).exists()
    }
    for shape in ([4096, 4096], [11008, 4096]):
        for batch in (1, 16, 128):
            for name, recs in data.items():
                for r in recs:
                    if (
                        r["shape"] == shape
                        and r["batch"] == batch
                        and r["sparsity"] == 0.7
                        and r["threads"] == 1
                    ):
                        s = r["speedup_vs_torch_fp32"]
                        lines.append(
                            f"| {shape[0]}x{shape[1]} | {batch} | {name} | "
                            + " | ".join(f"{s['sparse_' + m]:.2f}x" for m in FMTS)
                            + f" | {r['speedup_vs_torch_int8']['sparse_int8']:.2f}x | {s['torch_int8']:.2f}x | "
                            f"{s['torch_bf16']:.2f}x |"
                        )
    return "\n".join(lines)


def hs_table() -> str:
    path = RESULTS / "high_sparsity.json"
    if not path.exists():
        return ""
    lines = ["| sparsity | fp32 bitmask | fp32 delta | int8 bitmask | int8 delta | MB: fp32 bitmask / delta, int8 bitmask / delta |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in json.loads(path.read_text())["results"]:
        s, b = r["speedup_vs_torch_fp32"], r["bytes"]
        names = ["fp32_bitmask", "fp32_delta", "int8_bitmask", "int8_delta"]
        lines.append(
            f"| {r['sparsity']:.0%} | "
            + " | ".join(f"{s[n]:.2f}x" for n in names)
            + " | "
            + " / ".join(f"{b[n] / 1e6:.1f}" for n in names)
            + " |"
        )
    return "\n".join(lines)


def amx_batch_table(data: dict, threads: int, batch: int) -> str:
    """Batch > 1 rows of kernels_batch_amx.json: median wall ratios vs torch fp32, the bf16 / int8 sparse
    kernels as the runtime picks them (AMX) and on AVX-512 (AMX off), and the CPU-time ratios."""
    rows = [r for r in data["results"] if r["threads"] == threads and r["batch"] == batch]
    head = (
        "| shape | sparsity | torch fp32 ms | torch bf16 | torch int8 | sparse fp32 | sparse bf16 | sparse int8 "
        "| bf16 on AVX-512 | int8 on AVX-512 | CPU time: sparse fp32 / bf16 / int8 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s, c = r["speedup_vs_torch_fp32"], r.get("cpu_speedup_vs_torch_fp32", {})
        amx = r.get("amx", {})
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['sparsity']:.0%} | {r['ms']['torch_fp32']:.3f} | "
            f"{s['torch_bf16']:.2f}x | {s['torch_int8']:.2f}x | "
            + " | ".join(f"**{s['sparse_' + m]:.2f}x{' (AMX)' if amx.get(m) else ''}**" for m in FMTS)
            + " | "
            + " | ".join(
                f"{s[f'sparse_{m}_avx512']:.2f}x" if f"sparse_{m}_avx512" in s else "-"
                for m in ("bf16", "int8")
            )
            + " | "
            + " / ".join(f"{c['sparse_' + m]:.2f}x" if "sparse_" + m in c else "-" for m in FMTS)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    amx = RESULTS / "kernels_batch_amx.json"
    if amx.exists():
        data = json.loads(amx.read_text())
        print(f"Batch > 1 with AMX, {data['meta']}\n")
        for t in sorted({r["threads"] for r in data["results"]}):
            for b in sorted({r["batch"] for r in data["results"]}):
                print(f"\n#### batch {b}, {t} thread(s)\n")
                print(amx_batch_table(data, t, b))
    kern = RESULTS / "kernels.json"
    if kern.exists():
        data = json.loads(kern.read_text())
        print(f"Kernel sweep, {data['meta']}\n")
        threads = sorted({r["threads"] for r in data["results"]})
        batches = sorted({r["batch"] for r in data["results"]})
        for t in threads:
            for b in batches:
                print(f"\n#### batch {b}, {t} thread(s)\n")
                print(kernel_table(data, t, b))
    e2e = RESULTS / "e2e.json"
    if e2e.exists():
        data = json.loads(e2e.read_text())
        print(f"\n### End to end, {data['meta']}\n")
        print(e2e_table(data))


if __name__ == "__main__":
    main()
