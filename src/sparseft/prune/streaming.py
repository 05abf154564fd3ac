"""One-shot pruning from a model folder to an output folder, in memory or streamed block by block.

Streamed (`low_memory`), the model is a skeleton on the meta device: the weights outside the blocks
(embeddings, final norm, heads) are loaded once, and each block is read from the source safetensors
only while the driver works on it, then written pruned into the output and freed
(`sparseft.models.lazy`). Peak memory is then the resident weights + one block + the calibration
activations, whatever the model's depth: models larger than memory can be pruned. The driver, and
so the result, is the same: the tests check that both modes write identical weights and masks.

`low_memory="auto"` (the CLI default) streams whenever the source is a local safetensors folder whose
tensors carry the model's own names; it loads in memory otherwise (GGUF files, hub ids, compressed
checkpoints, remote code, checkpoints whose names transformers converts on load). Reading the blocks
costs little: each is read from the page cache twice (the capture's probe forward, then the solve;
once per calibration batch for stacks whose blocks get different inputs, like T5's), against seconds
of work per block. Streaming also fixes glibc's malloc thresholds so that the blocks' temporaries go
back to the system (`sparseft.prune.memory`): ~100 MB less peak on SmolLM2, for ~15% more CPU time
in page faults; the in-memory mode keeps glibc's defaults.

    >>> model, stream = load_for_oneshot("runs/dense", low_memory="auto")
    >>> report = oneshot_to_folder(model, "runs/pruned", batches, stream=stream, tokenizer=tok,
    ...                            method="sparsegpt", sparsity=0.5)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from sparseft.errors import ConfigError
from sparseft.models.layers import out_in_shape
from sparseft.models.lazy import SourceCheckpoint, StreamedWeights, StreamingUnsupported, empty_model
from sparseft.models.loading import is_compressed_checkpoint, load_model, resolve_source
from sparseft.models.saving import MASKS_FILE, atomic_folder, save_model_folder, write_record
from sparseft.models.walk import find_prunable
from sparseft.prune.driver import OneShotReport, oneshot
from sparseft.prune.memory import pin_malloc_thresholds

log = logging.getLogger(__name__)

LOW_MEMORY_MODES = ("auto", "on", "off")
Record = dict | Callable[[OneShotReport], dict] | None


def load_for_oneshot(
    model_ref: str | Path,
    dtype: str | torch.dtype = "float32",
    low_memory: str | bool = "auto",
    *,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, StreamedWeights | None]:
    """The model to prune and, when streamed, the weights that fill it block by block (else None).

    `low_memory`: "on" streams or raises `StreamingUnsupported` saying why not; "off" loads the whole
    model; "auto" streams when it can and says so in the log.
    """
    mode = {True: "on", False: "off"}.get(low_memory, low_memory)
    if mode not in LOW_MEMORY_MODES:
        raise ConfigError(f"low_memory must be one of {', '.join(LOW_MEMORY_MODES)}, got {low_memory!r}")
    if mode != "off":
        try:
            model, stream = _open_streamed(model_ref, dtype, trust_remote_code)
            log.info("streaming %s block by block (one block in memory at a time)", model_ref)
            # Memory over speed, as asked: freed temporaries go back to the system (see prune.memory).
            pin_malloc_thresholds()
            return model, stream
        except StreamingUnsupported as err:
            if mode == "on":
                raise
            log.info("loading %s in memory: it cannot be streamed (%s)", model_ref, err)
    return load_model(model_ref, dtype, trust_remote_code=trust_remote_code), None


def _open_streamed(model_ref, dtype, trust_remote_code: bool) -> tuple[PreTrainedModel, StreamedWeights]:
    if trust_remote_code:
        raise StreamingUnsupported("models with remote code load in memory")
    source, gguf_file = resolve_source(model_ref)
    folder = Path(source)
    if gguf_file or not folder.is_dir() or is_compressed_checkpoint(folder):
        raise StreamingUnsupported(f"{model_ref} is not a local folder of HF safetensors weights")
    checkpoint = SourceCheckpoint(folder)
    model = empty_model(folder, dtype)
    return model, StreamedWeights(model, checkpoint)


def oneshot_to_folder(
    model: PreTrainedModel,
    out_dir: str | Path,
    calib_batches: Iterable[Mapping[str, Any]] | None,
    *,
    stream: StreamedWeights | None = None,
    tokenizer=None,
    record: Record = None,
    overwrite: bool | None = None,
    **oneshot_kwargs,
) -> OneShotReport:
    """Prune with `sparseft.prune.driver.oneshot` and write `out_dir` atomically, in either mode.

    The folder is the same in both: config, weights (`model.safetensors`), masks, tokenizer, and the
    record `stage.json` (`record` is a dict, or a function of the report called once pruning is done).
    Streamed, the report's `masks` stay empty: they are written to `masks.safetensors` block by block.
    """
    if stream is None:
        report = oneshot(model, calib_batches, **oneshot_kwargs)
        save_model_folder(model, out_dir, tokenizer=tokenizer, masks=report.masks,
                          record=_record(record, report), overwrite=overwrite)
        return report
    layers = find_prunable(model, oneshot_kwargs.get("targets"), oneshot_kwargs.get("ignore"))
    mask_layout = {name: (torch.bool, out_in_shape(module)) for name, module in layers.items()}  # (out, in) masks
    with atomic_folder(out_dir, overwrite) as tmp:
        with stream.writing(tmp / "model.safetensors", tmp / MASKS_FILE, mask_layout):
            report = oneshot(model, calib_batches, residency=stream, **oneshot_kwargs)
            stream.write_rest(report.masks)  # layers outside the blocks (data-free magnitude only)
            report.masks = {}
        _save_config(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        rec = _record(record, report)
        if rec is not None:
            write_record(tmp, rec)
    return report


def _record(record: Record, report: OneShotReport) -> dict | None:
    return record(report) if callable(record) else record


def _save_config(model: PreTrainedModel, folder: Path) -> None:
    # What save_pretrained writes besides the weights, with the same two fields it sets.
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)
