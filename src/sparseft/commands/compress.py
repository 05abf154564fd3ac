"""`sparseft compress`: store a pruned model in the compressed bitmask format.

sparseft compress runs/smollm2-70 --out runs/smollm2-70-int8 --format int8
sparseft compress runs/smollm2-70 --out runs/smollm2-70-int8h --format int8 --head int8
sparseft compress runs/whisper-dec50 --out runs/whisper-dec50-int8 --format int8 --head int8 --dense-layers int8
"""

from __future__ import annotations

import argparse

from sparseft.commands._common import add_output_arguments, print_summary, settings_from, stage_io


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compress",
        help="store a pruned model's sparse layers as bitmask + packed values (2-9x smaller, faster on CPU)",
        description=(
            "Convert the pruned Linear layers (those in MODEL's masks.safetensors, else those with zeros) into the compressed "
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
    add_output_arguments(p)
    p.add_argument(
        "--format", "--values", dest="format", default="int8", metavar="FORMAT",
        help="value type: fp32, bf16, fp16, int8 or int4 (a scale per row and 128 columns), or any format "
             "registered in sparseft.runtime.formats "
             "(default int8)",
    )
    p.add_argument(
        "--head", metavar="FORMAT",
        help="also store the output projection (lm_head / proj_out) in this value type, e.g. int8; a head tied "
             "to the input embedding gets its own packed copy (default: left as it is)",
    )
    p.add_argument(
        "--dense-layers", metavar="FORMAT",
        help="also store the block Linears left unpruned (e.g. a Whisper whose encoder was not pruned) in this "
             "value type, every column kept: their large batches then run as the runtime's dense bf16 / int8 "
             "products instead of fp32 (default: left as they are)",
    )
    p.add_argument(
        "--min-sparsity", type=float, default=0.1,
        help="without a masks file: convert only layers with more than this fraction of zeros (default 0.1); "
             "the layers left dense are listed",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparseft.settings import CompressSettings
    from sparseft.stages import run_compress

    settings = settings_from(CompressSettings, {"values": "--format"}, values=args.format, min_sparsity=args.min_sparsity,
                             head=args.head, dense_layers=args.dense_layers)
    record = run_compress(settings, stage_io(args, args.out))
    print(f"compressed {record['layers']} layers ({args.format}) -> {args.out} ({record['bytes'] / 1e6:.1f} MB)")
    print_summary(record, ("layers", "bytes", "ratio"))
    return 0
