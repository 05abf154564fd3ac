"""Side by side with DeepSparse 1.8.0: a GPT-2-small-shaped model, the same pruned weights in both.

    python3 -m venv /work/venvs/deepsparse
    /work/venvs/deepsparse/bin/pip install deepsparse==1.8.0 onnxruntime==1.16.3   # DeepSparse's own venv
    .venv/bin/pip install -e ".[bench]"                                              # onnx, for the export
    OMP_WAIT_POLICY=passive python benchmarks/deepsparse_compare.py --seq 1 128 --threads 1 2
    python benchmarks/deepsparse_compare.py --table                                  # markdown tables

Model: GPT2Config(n_layer=12, n_embd=768, n_head=12), random init (seed 0), the 48 Linear (Conv1D)
layers of the blocks magnitude-pruned per layer by ``sparseft.prune.magnitude_prune`` to 0/50/70/90%.
The tied lm_head (768 x 50257) stays dense. Workload: batch 1, one forward pass of ``--seq`` tokens
without KV cache (seq 1 is a decode-like step: every Linear is a matrix-vector product; seq 128 a
prompt), static shapes. Candidates, all in the same run, interleaved in shuffled order every round:

- torch dense fp32: the unpruned model in PyTorch (the baseline every ratio refers to);
- sparseft fp32 / int8: the pruned model through ``sparsify_model`` (bitmask kernels); int8 also
  stores the lm_head in sparseft's int8 format (density 1) so that both int8 engines quantize every
  weight matrix; at 0% fp32 sparsify_model converts nothing (no zeros), so it is PyTorch;
- sparseft w8a8: the same int8 weights, activations quantized per token, on the W8A8 kernel (blocks and
  lm_head), compared with DeepSparse's int8 (which quantizes activations too, with static scales);
- with ``--compile``, also "sparseft fp32 / int8 compiled": the forward compiled by inductor (one
  graph, fixed shapes; the sparse layers through the lean sparseft::linear op of runtime/ops.py), which removes
  most of eager PyTorch's per-op cost outside the Linears (the baseline stays eager);
- at seq 1, also "sparseft fp32 / int8 / w8a8 native": the same models on the native decode step
  (runtime/native_decode.py, GPT-2 via runtime/native_gpt2.py): the whole one-token forward in one C call;
- deepsparse fp32 / int8: the same pruned model exported to ONNX (opset 14) and compiled by
  ``deepsparse.compile_model(batch_size=1, num_cores=threads)`` in its own venv, driven through
  ``deepsparse_worker.py``. int8 is static quantization in the MatMulInteger form DeepSparse
  accelerates (int8 weights per output channel, the same scales as sparseft's; uint8 activations with
  a calibrated per-tensor scale); see BENCHMARKS.md for the forms that did not work.

Every candidate's logits are compared with the pruned model's fp32 PyTorch logits. Per point: median
seconds per forward (wall and process CPU time), ratio vs torch dense fp32 at the same threads, and
sparseft / DeepSparse speed ratios; plus where sparseft's forward spends its CPU time (block linears,
lm_head, everything else). Results: benchmarks/results/deepsparse_compare.json (``--merge`` keeps the
points of other runs, e.g. ``--seq 128 --rounds 7 --merge``); ``--table`` prints BENCHMARKS.md's tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from sparseft.peers.worker import PeerWorker
from sparseft.prune.magnitude import magnitude_prune
from sparseft.runtime import SparseLinear, set_num_threads, sparsify_model
from sparseft.runtime.activations import fuse_activations
from sparseft.runtime.fast_decode import INDUCTOR_OPTIONS
from sparseft.runtime.native_decode import NativeDecoder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORKER = Path(__file__).resolve().parent / "deepsparse_worker.py"
DS_PYTHON = "/work/venvs/deepsparse/bin/python"
VOCAB = 50257
MODES = ("", " compiled", " native")  # candidates' forms: eager HF forward, inductor-compiled, native step


class Logits(nn.Module):
    """ids -> logits: the one computation every engine runs (also what is exported to ONNX)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # An explicit all-ones mask: transformers' packed-sequence check (aten::diff) cannot be exported.
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits


def build_model(seed: int = 0) -> GPT2LMHeadModel:
    """GPT-2 small's shape with random weights (GPT-2's own init, std 0.02)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=VOCAB)
    return GPT2LMHeadModel(cfg).eval()


def export_onnx(model: nn.Module, ids: torch.Tensor, path: Path) -> None:
    """Static-shape ONNX export (TorchScript exporter; the dynamo one needs onnxscript)."""
    wrapper = Logits(model).eval()  # export restores the wrapper's mode on every submodule: keep eval
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (ids,), str(path), dynamo=False, opset_version=14,
                          input_names=["input_ids"], output_names=["logits"])  # fmt: skip
    model.eval()


def sparseft_variants(pruned: nn.Module) -> dict[str, nn.Module]:
    """sparseft fp32 (what sparsify_model does with the pruned model) and int8 (every block layer and
    the lm_head in the int8 format, as DeepSparse's int8 model quantizes every weight matrix). A weight
    without zeros (the lm_head; every block layer at 0%) stores every column, no mask, as `sparseft
    compress --head int8 --dense-layers int8` packs it (the dense-row kernels). The MLPs' tanh GELU runs as
    one op (runtime/activations.py), as in a model prepared for decoding."""
    fp32 = copy.deepcopy(pruned)
    sparsify_model(fp32, "fp32")
    # W8A8: the same int8 weights with activations quantized per token (VNNI integer kernel), the closest
    # match of DeepSparse's int8 graph (int8 weights x uint8 activations, MatMulInteger)
    int8, w8a8 = copy.deepcopy(pruned), copy.deepcopy(pruned)
    for model, act in ((int8, "none"), (w8a8, "dynamic-int8")):
        for name, layer in list(model.named_modules()):
            if isinstance(layer, Conv1D) and ".h." in name:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, int8_layer(layer, act))
        model.lm_head = int8_layer(model.lm_head, act)  # tied to the embedding: set by hand
    for model in (fp32, int8, w8a8):  # the tanh GELU as one op, as prepare_for_decode(fuse=True) does
        fuse_activations(model)
    return {"sparseft fp32": fp32.eval(), "sparseft int8": int8.eval(), "sparseft w8a8": w8a8.eval()}


def int8_layer(layer: nn.Module, act: str) -> SparseLinear:
    """``layer`` in the int8 format on its per-row scales, every column stored when it has no zeros."""
    dense = bool((layer.weight != 0).all())
    return SparseLinear.from_dense(layer, "int8", act=act, scales=w8a8_row_scales(layer), store_all=dense)


def w8a8_row_scales(layer: nn.Module) -> torch.Tensor:
    """Symmetric int8 scales per output channel (max |w| / 127) of a Linear or a Conv1D."""
    w = layer.weight.detach()
    w = w.T if isinstance(layer, Conv1D) else w  # Conv1D stores (in, out)
    return w.abs().amax(dim=1).clamp_min(1e-12) / 127


def deepsparse_worker(python: str):
    """The worker process in DeepSparse's venv (sparseft.peers' pipe protocol), one JSON request per line."""
    if not Path(python).exists():
        raise SystemExit(f"no DeepSparse venv at {python}: create it with `python3 -m venv /work/venvs/deepsparse && "
                         "/work/venvs/deepsparse/bin/pip install deepsparse==1.8.0 onnxruntime==1.16.3`, or pass --ds-python")  # fmt: skip
    return PeerWorker("DeepSparse", Path(python), WORKER, threads=None)


def compiled_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids -> logits of a copy of ``model`` compiled by inductor (one graph, fixed shapes), its
    SparseLinear layers called through the lean ``sparseft::linear`` op (runtime/ops.py)."""
    model = copy.deepcopy(model)
    opts = {"fullgraph": True, "dynamic": False, "options": dict(INDUCTOR_OPTIONS)}
    compiled = torch.compile(Logits(model).eval(), **opts)
    return lambda ids: compiled(ids)  # a plain function: torch_runner wraps modules in Logits


def native_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """ids (1, 1) -> logits of ``model`` on the native decode step (runtime/native_decode.py: the whole
    forward in one C call), the token at position 0 as in the one-token forward every engine runs."""
    decoder = NativeDecoder(model, max_positions=1)

    def run(ids: torch.Tensor) -> torch.Tensor:
        decoder.step(int(ids[0, 0]), 0)
        return decoder.logits

    return run


def torch_runner(
    model: nn.Module | Callable, ids: torch.Tensor, threads: int
) -> Callable[[int], tuple[float, float]]:
    """reps -> (wall, process CPU) seconds per forward of ``model`` (or a compiled forward) with
    ``threads`` threads."""
    fn = Logits(model).eval() if isinstance(model, nn.Module) else model

    def run(reps: int) -> tuple[float, float]:
        torch.set_num_threads(threads)
        set_num_threads(threads)
        with torch.inference_mode():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                fn(ids)
            return (time.perf_counter() - t0) / reps, (time.process_time() - c0) / reps

    return run


def ds_runner(ds: PeerWorker, key: str) -> Callable[[int], tuple[float, float]]:
    def run(reps: int) -> tuple[float, float]:
        out = ds("run", key=key, reps=reps)  # timed inside the worker: the pipe is not counted
        return out["wall"], out["cpu"]

    return run


def interleaved(runners: dict[str, Callable], rounds: int, slot_s: float, seed: int = 0) -> dict[str, dict]:
    """Per candidate: wall / CPU seconds per call in each round; rounds run every candidate once in a
    shuffled order, ``reps`` calls each (sized to ~``slot_s`` seconds), so load from other jobs hits all."""
    reps = {}
    for name, run in runners.items():  # warm up, then size the slot
        run(1)
        reps[name] = max(1, round(slot_s / max(run(1)[0], 1e-4)))
    rng = random.Random(seed)
    walls: dict[str, list[float]] = {n: [] for n in runners}
    cpus: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(rounds):
        order = list(runners)
        rng.shuffle(order)
        for name in order:
            wall, cpu = runners[name](reps[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    return {n: {"reps": reps[n], "wall": walls[n], "cpu": cpus[n]} for n in runners}


class LayerTimer:
    """Forward hooks adding up wall and process-CPU seconds inside the linear layers (Linear, Conv1D,
    SparseLinear), split into the lm_head and the transformer blocks."""

    TYPES = (nn.Linear, Conv1D, SparseLinear)

    def __init__(self, model: nn.Module) -> None:
        self.reset()
        self.handles = []
        for name, mod in model.named_modules():
            if isinstance(mod, self.TYPES):
                part = "lm_head" if name.endswith("lm_head") else "blocks"
                self.handles += [mod.register_forward_pre_hook(self._pre),
                                 mod.register_forward_hook(lambda *_, p=part: self._post(p))]  # fmt: skip

    def reset(self) -> None:
        self.acc = {"lm_head": [0.0, 0.0], "blocks": [0.0, 0.0]}

    def _pre(self, *_: object) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def _post(self, part: str) -> None:
        self.acc[part][0] += time.perf_counter() - self.t0
        self.acc[part][1] += time.process_time() - self.c0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.inference_mode()
def time_split(model: nn.Module, ids: torch.Tensor, threads: int, reps: int) -> dict[str, float]:
    """Median milliseconds per forward (wall and process CPU) in the block linears, the lm_head and
    outside them (attention, norms, embeddings, activations, Python), over ``reps`` forwards."""
    torch.set_num_threads(threads)
    set_num_threads(threads)
    fn, timer = Logits(model).eval(), LayerTimer(model)
    rows = []
    for _ in range(reps):
        timer.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        fn(ids)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        acc = timer.acc
        rows.append({"total_wall": wall, "total_cpu": cpu,
                     "blocks_wall": acc["blocks"][0], "blocks_cpu": acc["blocks"][1],
                     "lm_head_wall": acc["lm_head"][0], "lm_head_cpu": acc["lm_head"][1],
                     "outside_wall": wall - acc["blocks"][0] - acc["lm_head"][0],
                     "outside_cpu": cpu - acc["blocks"][1] - acc["lm_head"][1]})  # fmt: skip
    timer.remove()
    return {f"{k}_ms": 1e3 * statistics.median(r[k] for r in rows) for k in rows[0]}


def agreement(logits: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """How close ``logits`` are to the reference: relative L2 error, max abs error, same top-1 share."""
    diff = logits.astype(np.float64) - ref
    return {"rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(ref)), "max_abs": float(np.abs(diff).max()),
            "top1_same": float((logits.argmax(-1) == ref.argmax(-1)).mean())}  # fmt: skip


def summarize(times: dict[str, dict], threads: list[int]) -> dict[str, dict]:
    """Medians and ratios: vs torch dense fp32 (same threads) and sparseft vs DeepSparse (same fmt)."""
    out = {}
    for name, rec in times.items():
        out[name] = {
            "wall_ms": 1e3 * statistics.median(rec["wall"]),
            "cpu_ms": 1e3 * statistics.median(rec["cpu"]),
        }
    for t in threads:
        base = out[f"torch dense fp32 t{t}"]
        for name, rec in out.items():
            if name.endswith(f" t{t}"):
                rec["vs_dense_wall"] = base["wall_ms"] / rec["wall_ms"]
                rec["vs_dense_cpu"] = base["cpu_ms"] / rec["cpu_ms"]
        for fmt, ds_fmt in (("fp32", "fp32"), ("int8", "int8"), ("w8a8", "int8")):
            ds = out[f"deepsparse {ds_fmt} t{t}"]
            for mode in MODES:
                sp = out.get(f"sparseft {fmt}{mode} t{t}")
                if sp is not None:
                    sp["vs_deepsparse_wall"] = ds["wall_ms"] / sp["wall_ms"]  # > 1: sparseft faster
                    sp["vs_deepsparse_cpu"] = ds["cpu_ms"] / sp["cpu_ms"]
    return out


def bench_point(base: nn.Module, ds: PeerWorker, sparsity: float, seq: int, args: argparse.Namespace) -> dict:
    """Prune, export, compile and time every candidate for one (sparsity, sequence length)."""
    work = args.workdir
    ids = torch.randint(0, VOCAB, (1, seq), generator=torch.Generator().manual_seed(1))
    calib = torch.randint(0, VOCAB, (args.calib_rows, seq), generator=torch.Generator().manual_seed(2))
    np.save(work / "ids.npy", ids.numpy())
    np.save(work / "calib.npy", np.concatenate([ids.numpy(), calib.numpy()]))
    pruned = copy.deepcopy(base)
    if sparsity > 0:
        magnitude_prune(pruned, sparsity)
    tag = f"s{round(sparsity * 100)}_q{seq}"
    load_start, t0 = os.getloadavg(), time.perf_counter()
    export_onnx(pruned, ids, work / f"{tag}.onnx")
    info = {"export_s": time.perf_counter() - t0}
    for fmt, quant in (("fp32", "none"), ("int8", args.ds_int8)):
        out = ds("prepare", src=str(work / f"{tag}.onnx"), dst=str(work / f"{tag}_{fmt}.onnx"), quant=quant,
                 calib=str(work / "calib.npy"))  # fmt: skip
        info[f"onnx_{fmt}_mb"] = out["bytes"] / 1e6
    (work / f"{tag}.onnx").unlink()
    ds("input", path=str(work / "ids.npy"))
    for fmt in ("fp32", "int8"):
        for t in args.threads:
            info[f"deepsparse {fmt} t{t}"] = ds(
                "load", key=f"{fmt} t{t}", onnx=str(work / f"{tag}_{fmt}.onnx"), cores=t
            )
        (work / f"{tag}_{fmt}.onnx").unlink()

    models = {"torch dense fp32": base, **sparseft_variants(pruned)}
    with torch.inference_mode():
        ref = Logits(pruned)(ids).double().numpy()
        check = {
            name: agreement(Logits(m)(ids).numpy(), ref)
            for name, m in models.items()
            if name != "torch dense fp32"
        }
    for fmt in ("fp32", "int8"):
        ds("logits", key=f"{fmt} t{args.threads[0]}", out=str(work / "logits.npy"))
        check[f"deepsparse {fmt}"] = agreement(np.load(work / "logits.npy"), ref)
    print(
        "  logits vs pruned torch fp32: " + ", ".join(f"{k} {v['rel_l2']:.1e}" for k, v in check.items()),
        flush=True,
    )

    compiled = {}
    if args.compile:  # the eager models stay candidates; the compiled ones are added next to them
        torch._dynamo.reset()  # the previous point's graphs: each model recompiles the shared forward
        with torch.inference_mode():
            for name, m in models.items():
                if not name.startswith("sparseft"):
                    continue  # the baseline stays eager PyTorch
                compiled[f"{name} compiled"] = fn = compiled_forward(m)
                t0 = time.perf_counter()
                check[f"{name} compiled"] = agreement(fn(ids).numpy(), ref)
                info[f"compile_s {name}"] = time.perf_counter() - t0
    if seq == 1:  # the native step runs one token per call (a prompt's forward gives the last logits only)
        with torch.inference_mode():
            for name, m in models.items():
                if name.startswith("sparseft"):
                    compiled[f"{name} native"] = fn = native_forward(m)
                    check[f"{name} native"] = agreement(fn(ids).numpy()[None, None], ref)
    runners = {}
    for t in args.threads:
        runners.update({f"{name} t{t}": torch_runner(m, ids, t) for name, m in {**models, **compiled}.items()})
        runners.update({f"deepsparse {fmt} t{t}": ds_runner(ds, f"{fmt} t{t}") for fmt in ("fp32", "int8")})
    times = interleaved(runners, args.rounds, args.slot)
    summary = summarize(times, args.threads)
    split = {f"{name} t{t}": time_split(m, ids, t, max(3, args.rounds // 2))
             for t in args.threads for name, m in models.items()}  # fmt: skip
    for t in args.threads:
        ds("free", key=f"fp32 t{t}")
        ds("free", key=f"int8 t{t}")
    for name in sorted(summary):
        s = summary[name]
        extra = (
            f"  vs DeepSparse {s['vs_deepsparse_wall']:.2f}x wall {s['vs_deepsparse_cpu']:.2f}x cpu"
            if "vs_deepsparse_wall" in s
            else ""
        )
        print(
            f"  {name:22s} {s['wall_ms']:8.2f} ms  cpu {s['cpu_ms']:8.2f} ms  vs dense {s['vs_dense_wall']:.2f}x{extra}",
            flush=True,
        )
    return {"sparsity": sparsity, "seq": seq, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_avg_1min": [load_start[0], os.getloadavg()[0]], "info": info, "logits_check": check,
            "summary": summary, "time_split": split, "times": times}  # fmt: skip


def table(data: dict) -> str:
    """Markdown tables of BENCHMARKS.md's DeepSparse section from a results file."""
    head = ("| seq | threads | sparsity | values | torch dense fp32 ms (CPU ms) | sparseft ms (CPU ms) | "
            "DeepSparse ms (CPU ms) | sparseft vs dense, wall / CPU | DeepSparse vs dense, wall / CPU | "
            "**sparseft / DeepSparse speed**, wall / CPU | logits rel. error sparseft / DeepSparse |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    split_head = ("| seq | threads | sparsity | values | sparseft CPU ms: block linears + lm_head + outside "
                  "= total | DeepSparse CPU ms total |")  # fmt: skip
    split = [split_head, "|" + "---|" * (split_head.count("|") - 1)]
    for p in data["points"]:
        threads = sorted({int(name.rpartition(" t")[2]) for name in p["summary"]})  # a merged run's own
        for t in threads:
            base = p["summary"][f"torch dense fp32 t{t}"]
            for fmt, mode in [(f, m) for m in MODES for f in ("fp32", "int8", "w8a8")]:
                if f"sparseft {fmt}{mode} t{t}" not in p["summary"]:
                    continue
                ds_fmt = "int8" if fmt == "w8a8" else fmt
                sp, ds = p["summary"][f"sparseft {fmt}{mode} t{t}"], p["summary"][f"deepsparse {ds_fmt} t{t}"]
                chk = p["logits_check"]
                lines.append(
                    f"| {p['seq']} | {t} | {p['sparsity']:.0%} | {fmt}{mode} | {base['wall_ms']:.1f} ({base['cpu_ms']:.1f}) | "
                    f"{sp['wall_ms']:.1f} ({sp['cpu_ms']:.1f}) | {ds['wall_ms']:.1f} ({ds['cpu_ms']:.1f}) | "
                    f"{sp['vs_dense_wall']:.2f}x / {sp['vs_dense_cpu']:.2f}x | {ds['vs_dense_wall']:.2f}x / {ds['vs_dense_cpu']:.2f}x | "
                    f"**{sp['vs_deepsparse_wall']:.2f}x / {sp['vs_deepsparse_cpu']:.2f}x** | "
                    f"{chk[f'sparseft {fmt}{mode}']['rel_l2']:.1e} / {chk[f'deepsparse {ds_fmt}']['rel_l2']:.1e} |"
                )  # fmt: skip
                if mode:
                    continue  # no per-layer split inside a compiled graph or the native step
                sl = p["time_split"][f"sparseft {fmt} t{t}"]
                split.append(
                    f"| {p['seq']} | {t} | {p['sparsity']:.0%} | {fmt} | {sl['blocks_cpu_ms']:.1f} + "
                    f"{sl['lm_head_cpu_ms']:.1f} + {sl['outside_cpu_ms']:.1f} = {sl['total_cpu_ms']:.1f} | {ds['cpu_ms']:.1f} |"
                )  # fmt: skip
    return "\n".join(lines) + "\n\n" + "\n".join(split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    ap.add_argument("--seq", type=int, nargs="+", default=[1, 128], help="tokens per forward (batch 1)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds per point")
    ap.add_argument("--slot", type=float, default=0.2, help="seconds per candidate per round")
    ap.add_argument("--calib-rows", type=int, default=8, help="random inputs calibrating int8 activations")
    ap.add_argument("--ds-int8", default="integer", choices=["integer", "qdq", "dynamic"],
                    help="ONNX int8 form for DeepSparse (only 'integer' is accelerated by 1.8.0)")  # fmt: skip
    ap.add_argument("--compile", action="store_true",
                    help="also time the sparseft candidates compiled by inductor (lean decode op)")  # fmt: skip
    ap.add_argument("--ds-python", default=DS_PYTHON, help="python of the venv with deepsparse==1.8.0")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "deepsparse_compare")
    ap.add_argument("--out", type=Path, default=RESULTS / "deepsparse_compare.json")
    ap.add_argument("--merge", action="store_true", help="keep --out's points for other (seq, sparsity)")
    ap.add_argument("--table", action="store_true", help="only print the markdown tables of --out")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = build_model()
    ds = deepsparse_worker(args.ds_python)
    meta = {"model": "GPT2Config(n_layer=12, n_embd=768, n_head=12), random init seed 0, lm_head tied and dense",
            "pruning": "sparseft magnitude_prune, uniform per layer, the 48 block Conv1D layers", "batch": 1,
            "workload": "one forward of `seq` tokens, no KV cache, static shapes", "threads": args.threads,
            "timing": "interleaved shuffled rounds, median of per-round seconds per call; "
            "cpu = process CPU time (all threads) per call", "ds_int8": args.ds_int8,
            "versions": {"torch": torch.__version__, **ds("versions")}, "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}  # fmt: skip
    points = json.loads(args.out.read_text())["points"] if args.merge and args.out.exists() else []
    try:
        for seq in args.seq:
            for sp in args.sparsities:
                print(f"seq {seq}, sparsity {sp:.0%}", flush=True)
                point = bench_point(base, ds, sp, seq, args)
                points = [p for p in points if (p["seq"], p["sparsity"]) != (seq, sp)] + [point]
                write(args.out, meta, sorted(points, key=lambda p: (p["seq"], p["sparsity"])))
    finally:
        ds.close()
    print(f"wrote {args.out}")


def write(path: Path, meta: dict, points: list[dict]) -> None:
    """Atomic JSON write (temp file, then rename), after every point so a long run keeps what it did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "points": points}, indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
