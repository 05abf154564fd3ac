"""The bench stage: greedy generation speed of a model against a baseline in the same run, and kernel timing.

What is timed depends on the model's kind (`sparseft.stages.tasks.bench_items`): a text model decodes a
fixed number of tokens after a prompt (tokens/s); a speech model transcribes each test clip to its end
(seconds per clip, log-mel features computed beforehand, and both models' WER on those clips). Batch 1,
greedy. Rounds are interleaved: in each round every item is run by each model in turn, and who goes
first rotates from round to round; the best round of each (model, item) is kept, because this kind of
machine is shared and noisy: only ratios measured side by side mean anything.

    >>> run_bench(BenchSettings(tokens=32, baseline="source"), StageIO("runs/c50", source="smollm2-135m"))
    >>> run_bench(BenchSettings(baseline="whisper-tiny.en", max_clips=3), StageIO("runs/whisper-50-int8"))
    >>> run_kernel_bench(KernelBenchSettings(shape=(4096, 4096), sparsity=0.7))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparseft.errors import ConfigError
from sparseft.settings import BenchSettings, KernelBenchSettings
from sparseft.stages.common import StageIO, input_tokenizer, report_log, stage_record


def set_threads(threads: int | None) -> int:
    """Use `threads` for torch and the sparse kernels (None: leave as is); returns the count in use."""
    import torch

    from sparseft.runtime import set_num_threads

    if threads is not None:
        torch.set_num_threads(threads)
        set_num_threads(threads)
    return torch.get_num_threads()


@dataclass
class Timing:
    """Per candidate: best seconds of each item over the rounds, the output of its first round; and
    `timeline`, every timed call as (round, item, candidate) in the order it ran."""

    seconds: dict[str, list[float]]
    outputs: dict[str, list[Any]]
    timeline: list[tuple[int, int, str]] = field(default_factory=list)


def timed_rounds(runs: dict[str, Callable[[int], Any]], items: int, rounds: int) -> Timing:
    """Time `run(i)` (one generation of item i) for every candidate and item in interleaved rounds.

    Each candidate first makes one untimed call (warm-up, compilation). In round r the candidates take
    their turns in an order rotated by r, item by item, so the calls of one item are adjacent in time
    and none always goes first. Also used by benchmarks/ (other engines are just other callables).

        >>> timing = timed_rounds({"a": lambda i: f(i), "b": lambda i: g(i)}, items=5, rounds=3)
        >>> sum(timing.seconds["b"]) / sum(timing.seconds["a"])        # a's speed-up over b
    """
    names = list(runs)
    timing = Timing({n: [float("inf")] * items for n in names}, {n: [None] * items for n in names})
    for run in runs.values():
        run(0)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for i in range(items):
            for name in order:
                start = time.perf_counter()
                out = runs[name](i)
                timing.seconds[name][i] = min(timing.seconds[name][i], time.perf_counter() - start)
                timing.timeline.append((r, i, name))
                if r == 0:
                    timing.outputs[name][i] = out
    return timing


def generate_runs(models: dict, items: Sequence) -> dict[str, Callable[[int], Any]]:
    """Per model, `run(i)`: greedy `generate()` of item i (its float inputs in the model's dtype, as a user
    of a bf16 model would pass them), under no_grad."""
    import torch

    def runner(model) -> Callable[[int], Any]:
        inputs = [{k: v.to(model.dtype) if v.is_floating_point() else v for k, v in item.inputs.items()}
                  for item in items]

        def run(i: int):
            # not inference_mode: fused decode layers build tensors lazily on their first call
            with torch.no_grad():
                return model.generate(**inputs[i], **items[i].options)

        return run

    return {name: runner(model) for name, model in models.items()}


def native_runs(models: dict, items: Sequence) -> tuple[dict[str, Callable[[int], Any]], dict[str, str]]:
    """Per model that a native decoder runs (runtime/native_decode.py: Llama-family text models;
    runtime/native_whisper.py: Whisper), `run(i)`: its greedy tokens of item i; and per model, the decode
    path it takes ("native", or why it stays on generate())."""
    from sparseft.runtime import native_decode, native_whisper

    paths, runs = {}, {}
    for name, model in models.items():
        speech = type(model).__name__ in native_whisper.WHISPER
        reason = (native_whisper if speech else native_decode).unsupported_reason(model)
        paths[name] = reason or "native"
        if reason:
            report_log.warning("%s decodes with generate(): %s", name, reason)
            continue
        if speech:
            decoder = native_whisper.NativeWhisperDecoder(model)
            runs[name] = lambda i, d=decoder: d.generate(items[i].inputs["input_features"],
                                                         items[i].options["max_new_tokens"], items[i].language)
        else:
            decoder = native_decode.NativeDecoder(model, _max_len(items))
            runs[name] = lambda i, d=decoder: d.generate(items[i].inputs["input_ids"], items[i].new_tokens)
    return runs, paths


def _prepared(model, settings: BenchSettings, max_len: int):
    if settings.fuse or settings.compile or settings.bf16_attention:
        from sparseft.runtime.fast_decode import prepare_for_decode

        prepare_for_decode(model, compile=settings.compile, fuse=settings.fuse, max_cache_len=max_len,
                           long_attention=settings.bf16_attention)
    return model


def _max_len(items: Sequence) -> int:
    """The longest sequence a static KV cache must hold: prompt plus new tokens."""
    prompt = max(int(item.inputs["input_ids"].shape[1]) if "input_ids" in item.inputs else 4 for item in items)
    return prompt + max(int(item.options["max_new_tokens"]) for item in items)


def _results(timing: Timing, items: Sequence, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The record's measurements: seconds per item and in total, the ratio, tokens/s (items of a fixed
    length), output lengths, the kind's scores per model, and the timeline."""
    total = {n: sum(s) for n, s in timing.seconds.items()}
    results: dict[str, Any] = {
        "items": [{"label": item.label, "reference": item.reference} for item in items],
        "seconds": timing.seconds, "total_seconds": total,
        "speedup": total["baseline"] / total["model"] if "baseline" in total else None,
        # > 1: the model is that much faster than each other candidate (baseline, peers) in this run
        "speedup_vs": {n: t / total["model"] for n, t in total.items() if n != "model"},
    }  # fmt: skip
    if all(item.new_tokens for item in items):
        results["tokens_per_s"] = {n: sum(item.new_tokens for item in items) / t for n, t in total.items()}
    results["output_tokens"] = {n: [int(o.shape[-1]) for o in outs] for n, outs in timing.outputs.items()}
    for key in next(iter(scores.values()), {}):
        results[key] = {n: s[key] for n, s in scores.items()}
    results["timeline"] = [list(entry) for entry in timing.timeline]
    return results


def _report(io: StageIO, baseline: str | None, results: dict[str, Any], threads: int, rounds: int) -> None:
    ratio = results["speedup"]
    against = f", {ratio:.2f}x {baseline}" if ratio else ""
    if "tokens_per_s" in results:
        speeds = results["tokens_per_s"]
        report_log.info("%s: %.1f tokens/s%s%s (%d threads, batch 1, %s)", io.input, speeds["model"], against,
                        f" ({speeds['baseline']:.1f})" if ratio else "", threads, results["items"][0]["label"])
        for name, speed in speeds.items():
            if name not in ("model", "baseline"):
                report_log.info("  peer %s: %.1f tokens/s (the model: %.2fx)", name, speed, results["speedup_vs"][name])
        return
    report_log.info("%s: %.3f s per clip%s (%d threads, batch 1, greedy, best of %d interleaved rounds)", io.input,
                    results["total_seconds"]["model"] / len(results["items"]), against, threads, rounds)
    seconds = results["seconds"]
    width = max(len(item["label"]) for item in results["items"])
    for i, item in enumerate(results["items"]):
        # the output length shows a model that stops early (or runs on), which times a different transcript
        cells = "  ".join(f"{name} {s[i]:7.3f} s ({results['output_tokens'][name][i]:3d} tokens)"
                          for name, s in seconds.items())
        report_log.info("  %-*s  %s%s", width, item["label"], cells,
                        f"  {seconds['baseline'][i] / seconds['model'][i]:5.2f}x" if ratio else "")
    for name, wer in results.get("wer", {}).items():
        vs = f", the model {results['speedup_vs'][name]:.2f}x faster" if name in results["speedup_vs"] else ""
        report_log.info("  %s WER %.2f%% on %d words%s", name, 100 * wer, results["words"][name], vs)


def _start_peers(settings: BenchSettings, task, items, io: StageIO, threads: int, tokenizer, model):
    """The peers of `settings.peers`, loaded on the dense source's own files (see `sparseft.peers`)."""
    from sparseft.peers import Peers, start_peers

    if not settings.peers:
        return Peers()
    from sparseft.stages.common import made_from

    # the dense model the input was made from, whether or not it is also timed as the baseline
    source = settings.baseline if settings.baseline not in (None, "source") else made_from(io.input) or io.origin
    return start_peers(settings.peers, task.kind, items, source=source, peer_model=settings.peer_model,
                       threads=threads, tokenizer=tokenizer, model=model)


def run_bench(settings: BenchSettings, io: StageIO) -> dict:
    """Generation speed of `io.input` (and of the baseline) on its kind's workload; the record goes to
    `io.output` if given."""
    from sparseft.models import load_model
    from sparseft.models.saving import write_record
    from sparseft.stages.tasks import bench_items, bench_scores, task_of

    threads = set_threads(settings.threads)
    tokenizer = input_tokenizer(io)
    models = {"model": load_model(io.input, io.dtype)}
    baseline = io.origin if settings.baseline == "source" else settings.baseline
    if baseline is not None:
        models["baseline"] = load_model(baseline, io.dtype)
    task = task_of(models["model"])
    items = bench_items(task, models["model"], tokenizer, settings)
    models = {name: _prepared(model, settings, _max_len(items)) for name, model in models.items()}
    peers = _start_peers(settings, task, items, io, threads, tokenizer, models["model"])
    runs, paths = generate_runs(models, items), {name: "generate" for name in models}
    if settings.native and task.kind in ("causal", "speech"):
        native, paths = native_runs(models, items)
        runs.update(native)
    try:
        timing = timed_rounds({**runs, **peers.runs}, len(items), settings.rounds)
    finally:
        peers.close()
    scores = {name: bench_scores(task, models.get(name, models["model"]), tokenizer, items, timing.outputs[name])
              for name in timing.outputs}  # a peer's transcripts are read with the model's tokenizer
    results = _results(timing, items, scores)
    _report(io, baseline, results, threads, settings.rounds)
    record = stage_record("bench", settings, io, baseline_model=baseline, model_kind=task.kind, threads=threads,
                          decode_paths=paths, peers=peers.info, peer_library_seconds=peers.library_seconds, **results)
    if io.output is not None:
        write_record(io.output, record)
    return record


def run_kernel_bench(settings: KernelBenchSettings) -> dict:
    """Time y = x W^T for one random sparse weight in each value type vs torch fp32, same run."""
    import torch
    import torch.nn.functional as F

    from sparseft.runtime import FORMATS, compress, sparse_matmul
    from sparseft.runtime.timing import best_times

    threads = set_threads(settings.threads)
    m, k = settings.shape
    if m < 1 or k < 1:
        raise ConfigError(f"shape sizes must be positive, got {m}x{k}")
    w = torch.randn(m, k)
    w *= torch.rand(m, k) >= settings.sparsity
    x = torch.randn(settings.batch, k)
    fns = {"dense fp32": lambda: F.linear(x, w)}
    for fmt in FORMATS:
        cw = compress(w, fmt)
        fns[f"sparse {fmt}"] = lambda cw=cw: sparse_matmul(x, cw)
    seconds = best_times(fns, seconds=settings.seconds)
    report_log.info("%dx%d, %.0f%% zeros, batch %d, %d threads", m, k, 100 * settings.sparsity, settings.batch, threads)
    for name, sec in seconds.items():
        report_log.info("  %-12s %8.3f ms  %5.2fx", name, sec * 1e3, seconds["dense fp32"] / sec)
    return {"stage": "kernel-bench", "settings": settings.model_dump(mode="json"), "threads": threads,
            "seconds": seconds, "speedup": {n: seconds["dense fp32"] / s for n, s in seconds.items()}}
