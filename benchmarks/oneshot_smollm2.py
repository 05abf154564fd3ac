"""One-shot pruning of the packaged SmolLM2-135M: held-out perplexity, run time and peak memory.

Each configuration runs the real CLI under `/usr/bin/time -v` (wall time, CPU time, max RSS), then the
pruned folder is reloaded and scored on the 100 original GSM problems with worked answers (never
used for calibration, which samples generated variants).

    OMP_WAIT_POLICY=passive python benchmarks/oneshot_smollm2.py --workdir /tmp/oneshot_runs
    -> benchmarks/results/oneshot_smollm2.json

`--memory` instead runs SparseGPT 50% (default calibration) with the whole model in memory and streamed
block by block (`--low-memory off|on`), and records peak RSS against the model's fp32 size:

    OMP_WAIT_POLICY=passive python benchmarks/oneshot_smollm2.py --memory --workdir /tmp/oneshot_runs
    -> benchmarks/results/oneshot_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "magnitude-50%": ["--method", "magnitude", "--sparsity", "0.5"],
    "magnitude-2:4": ["--method", "magnitude", "--nm", "2:4"],
    "wanda-50%": ["--method", "wanda", "--sparsity", "0.5"],
    "wanda-2:4": ["--method", "wanda", "--nm", "2:4"],
    "sparsegpt-50%": ["--method", "sparsegpt", "--sparsity", "0.5"],
    "sparsegpt-2:4": ["--method", "sparsegpt", "--nm", "2:4"],
}
MEMORY_CONFIGS = {
    "sparsegpt-50%-in-memory": ["--method", "sparsegpt", "--sparsity", "0.5", "--low-memory", "off"],
    "sparsegpt-50%-streamed": ["--method", "sparsegpt", "--sparsity", "0.5", "--low-memory", "on"],
}
RESULTS = Path(__file__).parent / "results" / "oneshot_smollm2.json"
MEMORY_RESULTS = Path(__file__).parent / "results" / "oneshot_memory.json"


def parse_time_v(text: str) -> dict:
    """Wall seconds, user/system CPU seconds and max RSS (MiB) from `/usr/bin/time -v` output."""

    def field(label: str) -> str:
        match = re.search(rf"{re.escape(label)}: (.+)", text)
        if not match:
            raise ValueError(f"no '{label}' in /usr/bin/time output")
        return match.group(1).strip()

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {
        "wall_s": round(wall, 1),
        "user_s": float(field("User time (seconds)")),
        "sys_s": float(field("System time (seconds)")),
        "max_rss_mib": round(int(field("Maximum resident set size (kbytes)")) / 1024, 1),
    }


def run_config(name: str, extra: list[str], workdir: Path) -> dict:
    out, log = workdir / name.replace("%", "pct").replace(":", "of"), workdir / f"{name}.time.log"
    if not ((out / "sparseft.json").exists() and log.exists()):
        cmd = [
            "/usr/bin/time",
            "-v",
            shutil.which("sparseft") or "sparseft",
            "oneshot",
            "smollm2-135m",
            *extra,
            "--no-progress",
            "--out",
            str(out),
        ]
        load_before = os.getloadavg()[0]
        with open(log, "w") as err, open(workdir / f"{name}.stdout.log", "w") as stdout:
            subprocess.run(
                cmd, stdout=stdout, stderr=err, check=True, env={**os.environ, "OMP_WAIT_POLICY": "passive"}
            )
        (workdir / f"{name}.load").write_text(f"{load_before} {os.getloadavg()[0]}")
    record = json.loads((out / "sparseft.json").read_text())
    load = (workdir / f"{name}.load").read_text().split() if (workdir / f"{name}.load").exists() else []
    return {
        "folder": str(out),
        "total_sparsity": round(record["total_sparsity"], 4),
        "oneshot_seconds_in_process": round(record["seconds"], 1),
        "peak_rss_before_save_mib": record.get("peak_rss_before_save_mib"),
        **parse_time_v(log.read_text()),
        "loadavg_before_after": [float(x) for x in load],
    }


def heldout_perplexity(model_ref: str) -> float:
    from sparseft.data import gsm_problems
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.models import load_model, load_tokenizer

    model, tok = load_model(model_ref), load_tokenizer("smollm2-135m")
    return round(perplexity(model, tok, [p.text for p in gsm_problems()], seqlen=512), 3)


def import_baseline_mib() -> float:
    """Peak RSS of a Python that only imports what `sparseft oneshot` imports (torch, transformers, ...)."""
    code = (
        "import resource, sparseft.cli, sparseft.prune.streaming, sparseft.data.calibration;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return round(int(out.split()[-1]) / 1024, 1)


def run_memory(workdir: Path, results_path: Path) -> dict:
    """Both residency modes of SparseGPT 50%, their peak RSS against the fp32 weights, and perplexity."""
    from sparseft.models import packaged_model_dir

    weights = packaged_model_dir("smollm2-135m") / "model.safetensors"
    results = {
        "setup": {
            "command": "/usr/bin/time -v sparseft oneshot smollm2-135m --method sparsegpt --sparsity 0.5 "
            "--low-memory off|on --out DIR (defaults: 128 x 512 calibration tokens, batch 8)",
            "model_fp32_mib": round(weights.stat().st_size / 2**20, 1),
            "python_torch_transformers_mib": import_baseline_mib(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_WAIT_POLICY=passive",
            "note": "peak RSS = /usr/bin/time's maximum resident set size (file-backed pages of mapped weights "
            "included); the machine was shared, so wall times are upper bounds and user+sys is the CPU time",
        },
        "runs": {},
    }
    for name, extra in MEMORY_CONFIGS.items():
        entry = run_config(name, extra, workdir)
        entry["perplexity"] = heldout_perplexity(entry["folder"])
        entry["peak_over_fp32"] = round(entry["max_rss_mib"] / results["setup"]["model_fp32_mib"], 2)
        results["runs"][name] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: {entry}", file=sys.stderr, flush=True)
    return results


def merge_results(results_path: Path, parts: list[Path]) -> None:
    """Fold the dense entry and runs of `parts` into `results_path` (later files win)."""
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for part in parts:
        data = json.loads(part.read_text())
        if data.get("setup") and not results.get("setup"):
            results["setup"] = data["setup"]
        if "dense" in data:
            results["dense"] = data["dense"]
        results.setdefault("runs", {}).update(data.get("runs", {}))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", default="/tmp/oneshot_runs", help="pruned folders and time logs (reused)"
    )
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), help="run just these configurations")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense model's perplexity")
    parser.add_argument(
        "--nsamples",
        type=int,
        default=128,
        help="calibration windows (default 128, the CLI default); other values tag the run name",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="only merge these results files (runs made in parallel) into --results, then stop",
    )
    parser.add_argument("--memory", action="store_true",
                        help=f"peak memory in memory vs streamed (SparseGPT 50%%) -> {MEMORY_RESULTS}")
    args = parser.parse_args()
    if args.memory:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        print(json.dumps(run_memory(Path(args.workdir), MEMORY_RESULTS), indent=2))
        return
    results_path: Path = args.results
    if args.merge:
        merge_results(results_path, args.merge)
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault(
        "setup",
        {
            "model": "smollm2-135m (SmolLM2-135M-Instruct, dequantized Q4_1 GGUF, fp32)",
            "calibration": "generated GSM variants (seed 0), windows of 512 tokens: 128 of them unless the run name "
            "says @nN; magnitude uses none",
            "heldout": "100 original GSM problems with worked answers, windows of 512 tokens",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_WAIT_POLICY=passive, torch default threads",
            "note": "the machine was shared with other jobs: wall times are upper bounds; CPU time is user+sys",
        },
    )
    if "dense" not in results and not args.no_dense:
        results["dense"] = {"perplexity": heldout_perplexity("smollm2-135m"), "total_sparsity": 0.0}
    for config in args.only or list(CONFIGS):
        t0 = time.time()
        name, extra = config, CONFIGS[config]
        if args.nsamples != 128 and not config.startswith("magnitude"):  # magnitude runs without data
            name, extra = f"{config}@n{args.nsamples}", [*extra, "--nsamples", str(args.nsamples)]
        entry = run_config(name, extra, workdir)
        entry["perplexity"] = heldout_perplexity(entry["folder"])
        results.setdefault("runs", {})[name] = entry
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: {entry} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
