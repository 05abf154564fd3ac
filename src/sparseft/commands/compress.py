"""`sparseft compress`: store a pruned model in the compressed bitmask format.

sparseft compress runs/smollm2-70 --out runs/smollm2-70-int8 --format int8
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sparseft.errors import ModelError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress",
        help="store a pruned model's sparse layers as bitmask + packed values (2-9x smaller, faster on CPU)",
        description=(
            "Convert every Linear layer whose weight has zeros (the pruning mask) into the compressed "
            "bitmask format and save a checkpoint folder that `sparseft.runtime.load_compressed` (and "
            "`sparseft bench --model`) loads. Values are stored as fp32 (exact), bf16 or int8 "
            "(per-output-channel scales). A folder written by `sparseft quantize` keeps its int8 values and "
            "scales exactly and its W8A8 layers run with int8 activations; the layers it left in full "
            "precision stay fp32 (bf16 with --format bf16)."
        ),
    )
    p.add_argument(
        "model", help="pruned model: HF folder, GGUF folder or packaged name (zeros define the mask)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (replaced atomically if it exists)")
    p.add_argument(
        "--format", default="int8", choices=["fp32", "bf16", "int8"], help="value type (default int8)"
    )
    p.add_argument(
        "--min-sparsity", type=float, default=0.0,
        help="convert only layers with more than this fraction of zeros (default 0: any zero)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.models import load_model
    from sparseft.quant.to_runtime import folder_int8_specs
    from sparseft.runtime import save_compressed, sparsify_model

    model = load_model(args.model, "float32")
    # a quantized folder (sparseft quantize) keeps its int8 values, scales and activation modes exactly
    int8 = folder_int8_specs(args.model) if Path(args.model).is_dir() else {}
    fmt = "fp32" if int8 and args.format == "int8" else args.format
    names = sparsify_model(model, fmt, min_sparsity=args.min_sparsity, int8=int8)
    if not names:
        raise ModelError(
            f"no Linear layer of {args.model} has more than {args.min_sparsity:.0%} zeros; "
            "prune it first (sparseft prune) or lower --min-sparsity"
        )
    out = save_compressed(model, args.out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"compressed {len(names)} layers ({args.format}) -> {out} ({size / 1e6:.1f} MB)")
    return 0
