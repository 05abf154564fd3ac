"""The prune stage: data-free magnitude pruning (uniform, global or N:M) of any HF model.

    >>> record = run_prune(PruneSettings(sparsity=0.5), StageIO("smollm2-135m", output=Path("runs/mag50")))
"""

from __future__ import annotations

from sparseft.settings import PruneSettings
from sparseft.stages.common import StageIO, load_input, report_log, stage_record


def run_prune(settings: PruneSettings, io: StageIO) -> dict:
    """Prune `io.input` by magnitude; write the model, its masks and the record to `io.output`."""
    from sparseft.models.saving import save_model_folder
    from sparseft.prune import magnitude_prune, sparsity_report

    out = io.require_output("prune")
    model, tokenizer = load_input(io)
    masks = magnitude_prune(model, settings.sparsity, scheme=settings.scheme, nm=settings.nm,
                            overrides=settings.overrides, targets=settings.targets, ignore=settings.ignore)
    report = sparsity_report(model, masks)
    report_log.info(report.format(max_rows=None if len(report.layers) <= 40 else 40))
    record = stage_record("prune", settings, io, method="magnitude", **report.as_dict())
    save_model_folder(model, out, tokenizer=tokenizer, masks=masks, record=record, overwrite=io.overwrite)
    return record
