"""The bench stage: greedy-decode speed of a model against a baseline in the same run, and kernel timing.

Rounds are interleaved (model, baseline, model, ...) and the best round of each is kept, because this
kind of machine is shared and noisy: only ratios measured side by side mean anything.

    >>> run_bench(BenchSettings(tokens=32, baseline="source"), StageIO("runs/c50", source="smollm2-135m"))
    >>> run_kernel_bench(KernelBenchSettings(shape=(4096, 4096), sparsity=0.7))
"""

from __future__ import annotations

import time

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


def decode_speed(models: dict, ids, tokens: int, rounds: int) -> dict[str, float]:
    """Greedy tokens/s of each model on prompt `ids`, batch 1, interleaved rounds, best round kept."""
    import torch

    best = dict.fromkeys(models, float("inf"))
    with torch.no_grad():  # not inference_mode: fused decode layers build tensors lazily on first call
        for model in models.values():  # warm-up (and compilation) outside the timed rounds
            model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: tokens / seconds for name, seconds in best.items()}


def _prepared(model, settings: BenchSettings, max_len: int):
    if settings.fuse or settings.compile:
        from sparseft.runtime.fast_decode import prepare_for_decode

        prepare_for_decode(model, compile=settings.compile, fuse=settings.fuse, max_cache_len=max_len)
    return model


def run_bench(settings: BenchSettings, io: StageIO) -> dict:
    """Decode tokens/s of `io.input` (and of the baseline); the record goes to `io.output` if given."""
    import torch

    from sparseft.models import load_model
    from sparseft.models.saving import write_record

    threads = set_threads(settings.threads)
    tokenizer = input_tokenizer(io)
    # Speed does not depend on which tokens: without a tokenizer, a fixed prompt of ids stands in.
    ids = tokenizer(settings.prompt, return_tensors="pt")["input_ids"] if tokenizer else torch.arange(1, 17)[None]
    max_len = ids.shape[1] + settings.tokens
    models = {"model": _prepared(load_model(io.input, io.dtype), settings, max_len)}
    baseline = io.origin if settings.baseline == "source" else settings.baseline
    if baseline is not None:
        models["baseline"] = _prepared(load_model(baseline, io.dtype), settings, max_len)
    speeds = decode_speed(models, ids, settings.tokens, settings.rounds)
    ratio = speeds["model"] / speeds["baseline"] if baseline is not None else None
    report_log.info("%s: %.1f tokens/s%s (%d threads, batch 1, %d new tokens)", io.input, speeds["model"],
                    f", {ratio:.2f}x {baseline} ({speeds['baseline']:.1f})" if ratio else "", threads, settings.tokens)
    record = stage_record("bench", settings, io, baseline_model=baseline, threads=threads,
                          prompt_tokens=int(ids.shape[1]), tokens_per_s=speeds, speedup=ratio)
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
