"""`sparseft bench`: time the sparse kernels (or a compressed model's decoding) against dense PyTorch.

sparseft bench --shape 4096x4096 --sparsity 0.7 --batch 1 --threads 1
sparseft bench --model runs/smollm2-70-int8 --tokens 64 [--fuse] [--compile]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseft.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed of the sparse kernels vs dense PyTorch on this CPU",
        description=(
            "Without --model: time y = x W^T for a random weight of --shape with --sparsity zeros, in "
            "each value type, against torch fp32 F.linear in the same run (interleaved, best of 7). "
            "With --model: greedy-decode --tokens tokens with a compressed checkpoint and report tokens/s. "
            "Set OMP_WAIT_POLICY=passive when using 2 threads."
        ),
    )
    p.add_argument("--shape", default="4096x4096", help="OUTxIN of the weight (default 4096x4096)")
    p.add_argument("--sparsity", type=float, default=0.7, help="fraction of zeros (default 0.7)")
    p.add_argument("--batch", type=int, default=1, help="rows of x (default 1 = decode)")
    p.add_argument("--threads", type=int, default=None, help="threads (default torch.get_num_threads())")
    p.add_argument("--model", type=Path, default=None, help="compressed checkpoint folder to decode with")
    p.add_argument("--tokens", type=int, default=64, help="new tokens for --model (default 64)")
    p.add_argument("--fuse", action="store_true", help="--model: fuse q/k/v and gate/up into one call each")
    p.add_argument(
        "--compile",
        action="store_true",
        help="--model: static KV cache and a torch.compile'd decoder step (the first call compiles: minutes)",
    )
    p.add_argument(
        "--seconds", type=float, default=2.0, help="measuring time of the kernel bench (default 2)"
    )
    p.set_defaults(func=run)


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        m, k = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise ConfigError(f"--shape must look like 4096x4096, got {text!r}") from err
    if m < 1 or k < 1:
        raise ConfigError(f"--shape sizes must be positive, got {text!r}")
    return m, k


def _bench_kernels(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from sparseft.runtime import compress, sparse_matmul
    from sparseft.runtime.timing import best_times

    if not 0.0 <= args.sparsity < 1.0:
        raise ConfigError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    m, k = _parse_shape(args.shape)
    w = torch.randn(m, k)
    w *= torch.rand(m, k) >= args.sparsity
    x = torch.randn(args.batch, k)
    cws = {fmt: compress(w, fmt) for fmt in ("fp32", "bf16", "int8")}
    fns = {"dense fp32": lambda: F.linear(x, w)}
    fns.update({f"sparse {f}": (lambda cw=cw: sparse_matmul(x, cw)) for f, cw in cws.items()})
    t = best_times(fns, seconds=args.seconds)
    print(f"{m}x{k}, {args.sparsity:.0%} zeros, batch {args.batch}, {torch.get_num_threads()} threads")
    for name, sec in t.items():
        print(f"  {name:12s} {sec * 1e3:8.3f} ms  {t['dense fp32'] / sec:5.2f}x")


def _bench_model(args: argparse.Namespace) -> None:
    import time

    import torch

    from sparseft.runtime import load_compressed

    model = load_compressed(args.model)
    ids = torch.tensor([[1, 2, 3, 4]])
    if args.fuse or args.compile:
        from sparseft.runtime.fast_decode import prepare_for_decode

        prepare_for_decode(
            model, compile=args.compile, fuse=args.fuse, max_cache_len=ids.shape[1] + args.tokens
        )
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    if args.compile:
        print(f"compiled the decoder step in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
    dt = time.perf_counter() - t0
    print(f"{args.model}: {args.tokens / dt:.1f} tokens/s ({torch.get_num_threads()} threads, batch 1)")


def run(args: argparse.Namespace) -> int:
    import torch

    from sparseft.runtime import set_num_threads

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        set_num_threads(args.threads)
    if args.model is not None:
        _bench_model(args)
    else:
        _bench_kernels(args)
    return 0
