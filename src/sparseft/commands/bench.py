"""`sparseft bench`: time the sparse kernels (or a compressed model's decoding) against dense PyTorch.

sparseft bench --shape 4096x4096 --sparsity 0.7 --batch 1 --threads 1
sparseft bench --model runs/smollm2-70-int8 --baseline smollm2-135m --tokens 64 [--fuse] [--compile]
sparseft bench --model runs/smollm2-70-int8 --native --threads 1      # one C call per token (Llama family)
sparseft bench --model runs/whisper-50-int8 --data librivox --clips 3 --threads 1   # baseline: whisper-tiny.en
sparseft bench --model runs/smollm2-70-int8 --threads 1 --peer llama.cpp:Q4_0 llama.cpp:Q8_0   # + llama.cpp
sparseft bench --model runs/whisper-50-int8 --data librivox cards --peer ct2:int8               # + CTranslate2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseft.commands._common import print_summary, settings_from
from sparseft.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed of the sparse kernels vs dense PyTorch on this CPU",
        description=(
            "Without --model: time y = x W^T for a random weight of --shape with --sparsity zeros, in "
            "each value type, against torch fp32 F.linear in the same run (interleaved, best of 7). "
            "With --model: greedy-decode --tokens tokens with any model (dense or compressed) and report "
            "tokens/s, next to --baseline measured in interleaved rounds of the same run; a speech model "
            "(Whisper) instead transcribes each clip of --data and reports seconds per clip and the WER of "
            "both models. "
            "Set OMP_WAIT_POLICY=passive when using 2 threads."
        ),
    )
    p.add_argument("--shape", default="4096x4096", help="OUTxIN of the weight (default 4096x4096)")
    p.add_argument("--sparsity", type=float, default=0.7, help="fraction of zeros (default 0.7)")
    p.add_argument("--batch", type=int, default=1, help="rows of x (default 1 = decode)")
    p.add_argument("--threads", type=int, default=None, help="threads (default torch.get_num_threads())")
    p.add_argument("--model", default=None, help="model to decode with: compressed checkpoint, folder or packaged name")
    p.add_argument("--baseline", default="source",
                   help="--model: a second model timed in the same run; default: the dense model --model was "
                        "made from (followed back through the stage.json of each stage's folder); 'none': "
                        "time --model alone")
    p.add_argument("--data", nargs="+", metavar="SOURCE",
                   help="--model, speech models: clips to transcribe (test split; default librivox)")
    p.add_argument("--clips", type=int, help="--model, speech models: the first N clips of --data (default all)")
    p.add_argument("--tokenizer", help="--model: where the tokenizer is if not with the model")
    p.add_argument("--tokens", type=int, default=64, help="new tokens for --model (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="--model: interleaved rounds, best kept (default 3)")
    p.add_argument("--peer", nargs="+", default=[], metavar="ENGINE[:TYPE]",
                   help="--model: other engines timed in the same interleaved rounds, each from a venv of its own "
                        "(created once; llama-cpp-python builds from source: minutes): llama.cpp (the GGUF as "
                        "given), llama.cpp:Q4_0 / Q8_0 / F16 / F32 (requantized by llama.cpp once) for text models; "
                        "ct2:int8 / ct2:float32 (CTranslate2) for Whisper")
    p.add_argument("--peer-model", help="--peer: the dense model's own file (.gguf, CTranslate2 folder); default: "
                                        "the packaged source model's files")
    p.add_argument("--out", help="--model: folder to write the record to (stage.json: every timing, ratio and score)")
    p.add_argument("--fuse", action="store_true", help="--model: fuse q/k/v and gate/up into one call each")
    p.add_argument("--bf16-attention", action="store_true",
                   help="--model: attention over 256+ query rows (Whisper's encoder, long prompts) in bf16 where "
                        "the CPU has AMX or AVX512-BF16 (both --model and --baseline)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="--model: static KV cache and a torch.compile'd decoder step (the first call compiles: minutes)",
    )
    p.add_argument("--native", action="store_true",
                   help="--model, text models: batch-1 greedy decode as one C call per token (Llama-family "
                        "models: Llama, Qwen2, Mistral, SmolLM2), model and baseline alike; others use generate()")
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


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import BenchSettings, KernelBenchSettings
    from sparseft.stages import StageIO, run_bench, run_kernel_bench

    if args.model is None:
        settings = settings_from(KernelBenchSettings, shape=_parse_shape(args.shape), sparsity=args.sparsity,
                                 batch=args.batch, seconds=args.seconds, threads=args.threads)
        run_kernel_bench(settings)
        return 0
    baseline = _baseline(str(args.model), args.baseline)
    settings = settings_from(BenchSettings, {"max_clips": "--clips"}, tokens=args.tokens, rounds=args.rounds,
                             baseline=baseline, fuse=args.fuse, compile=args.compile, native=args.native, threads=args.threads,
                             bf16_attention=args.bf16_attention,
                             data=args.data, max_clips=args.clips, peers=args.peer, peer_model=args.peer_model)
    out = Path(args.out) if args.out else None
    record = run_bench(settings, StageIO(str(args.model), out, source=args.tokenizer or baseline))
    print_summary(record, tuple(k for k in ("tokens_per_s", "total_seconds", "speedup", "wer", "threads") if k in record))
    return 0


def _baseline(model: str, option: str) -> str | None:
    """The baseline model the option names: 'source' is the model `model` was made from (none if no
    sparseft stage wrote it), 'none' none."""
    from sparseft.stages.common import made_from

    if option == "none":
        return None
    return made_from(model) if option == "source" else option
