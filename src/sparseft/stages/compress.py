"""The compress stage: a pruned (or quantized) model stored as bitmask + packed values for the runtime.

Layers: those named in the input's masks file, else those with more than `min_sparsity` zeros. A folder
written by the quantize stage keeps its int8 values, scales and activation modes exactly (its GPTQ head too,
in the format it was quantized to); the layers it left in full precision are stored as fp32 (bf16 with
`values: bf16`).

    >>> record = run_compress(CompressSettings(values="int8"), StageIO("runs/sgpt50", Path("runs/sgpt50-int8")))
"""

from __future__ import annotations

from pathlib import Path

from sparseft.errors import ModelError
from sparseft.models.saving import MASKS_FILE, write_record
from sparseft.settings import CompressSettings
from sparseft.stages.common import StageIO, folder_bytes, input_masks, load_input, report_log, stage_record


def _zero_fractions(model) -> dict[str, float]:
    """Fraction of exact zeros of every Linear/Conv1D of `model` (before conversion), by name."""
    from sparseft.models.layers import weight_matrix
    from sparseft.models.walk import is_prunable

    return {n: float((weight_matrix(m) == 0).float().mean()) for n, m in model.named_modules() if is_prunable(m)}


def compress_head(model, fmt: str, scales=None) -> str:
    """Replace the output projection (lm_head / proj_out) by a dense SparseLinear of `fmt`; return its name.

    A head tied to the input embedding is untied: the embedding keeps its own weights for the lookup and
    the config says `tie_word_embeddings: false`, so loading never re-ties the packed head to it.
    `scales`: the head's quantization scales (a quantized folder's GPTQ head), kept exactly.
    """
    from sparseft.models.head import output_projection, untie_config
    from sparseft.runtime import SparseLinear

    name, head = output_projection(model)
    # store_all: a quantized head's zeros are rounding's (27% of GPTQ int4 codes), not pruning's; stored as
    # columns, the head runs the kernels that read no mask. A copy: the embedding's values are untouched.
    packed = SparseLinear.from_dense(head, fmt, scales=scales, store_all=True)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, packed)
    untie_config(model)
    return name


def compress_dense_layers(model, fmt: str, done: list[str]) -> list[str]:
    """Store every Linear inside a transformer block that is not in `done` as a SparseLinear of `fmt` with
    every column kept (a dense matrix in the runtime's layout); returns their names. On a CPU where large
    batches run as dense products (runtime/dense_batch.py), an unpruned encoder then computes in bf16 /
    int8 at the sparse layers' speed instead of in fp32."""
    from sparseft.models.walk import find_blocks
    from sparseft.runtime import SparseLinear
    from sparseft.runtime.convert import _is_linear, _set_module

    blocks, skip = [b.name + "." for b in find_blocks(model)], set(done)
    names = [n for n, m in model.named_modules() if n not in skip and _is_linear(m) and n.startswith(tuple(blocks))]
    for name in names:
        _set_module(model, name, SparseLinear.from_dense(model.get_submodule(name), fmt, store_all=True))
    return names


def _head_format(settings: CompressSettings, source) -> tuple[str | None, object]:
    """(value format of the head, its scales or None): the quantize stage's GPTQ head is stored in its own
    format and scales; asking for another format than the one it was quantized to is refused."""
    from sparseft.errors import ConfigError
    from sparseft.quant import read_head_quant

    quantized = read_head_quant(source) if Path(source).is_dir() else None
    if quantized is None:
        return settings.head, None
    if settings.head not in (None, quantized.fmt):
        raise ConfigError(f"{source} holds {quantized.name} quantized to {quantized.fmt} by GPTQ; compress it with "
                          f"--head {quantized.fmt} (or leave --head out), not {settings.head}")
    return quantized.fmt, quantized.scales


def run_compress(settings: CompressSettings, io: StageIO) -> dict:
    """Swap the pruned Linears of `io.input` for SparseLinear and save a compressed checkpoint."""
    from sparseft.quant.to_runtime import folder_int8_specs
    from sparseft.runtime import save_compressed, sparsify_model
    from sparseft.runtime.formats import get_format

    out = io.require_output("compress")
    model, tokenizer = load_input(io, dtype="float32")
    masks = input_masks(io)
    is_folder = Path(io.input).is_dir()
    int8 = folder_int8_specs(io.input) if is_folder else {}
    # With a quantized input the int8 layers keep their own values and scales; the layers its quantize
    # stage left in full precision must not be quantized here either.
    fmt = "fp32" if int8 and get_format(settings.values).has_scales else settings.values
    candidates = _zero_fractions(model)
    names = sparsify_model(model, fmt, masks=masks, min_sparsity=settings.min_sparsity, int8=int8)
    skipped = {n: round(z, 4) for n, z in candidates.items() if n not in names and z > 0}
    if skipped:
        report_log.info("left dense (%d layers with some zeros, at most %.0f%%): %s", len(skipped),
                        100 * max(skipped.values()), ", ".join(list(skipped)[:8]) + (" ..." if len(skipped) > 8 else ""))
    if not names:
        raise ModelError(
            f"no Linear layer of {io.input} has more than {settings.min_sparsity:.0%} zeros; "
            "prune it first (sparseft prune) or lower --min-sparsity"
        )
    dense = compress_dense_layers(model, settings.dense_layers, names) if settings.dense_layers else []
    head_fmt, head_scales = _head_format(settings, io.input)
    head = compress_head(model, head_fmt, head_scales) if head_fmt else None
    save_compressed(model, out, tokenizer=tokenizer, overwrite=io.overwrite)
    size = folder_bytes(out)
    source = sum(f.stat().st_size for f in Path(io.input).glob("*.safetensors") if f.name != MASKS_FILE) if is_folder else 0
    record = stage_record(
        "compress", settings, io, layers=len(names), head=head, dense_layers=len(dense), skipped_layers=skipped,
        bytes=size, int8_layers=len(int8), w8a8_layers=sum(spec.act != "none" for spec in int8.values()),
        input_bytes=source, ratio=source / size if size and source else None,
    )  # fmt: skip
    write_record(out, record)  # last: the stage counts as finished only once its record is there
    return record
