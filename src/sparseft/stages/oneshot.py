"""The oneshot stage: prune block by block from calibration data (SparseGPT, Wanda) or by magnitude.

Local safetensors folders are streamed one block at a time by default (`low_memory: auto`), so the CLI,
recipes and the Python API all get the low-memory path.

    >>> record = run_oneshot(OneShotSettings(sparsity=0.5), StageIO("smollm2-135m", output=Path("runs/sgpt50")))
"""

from __future__ import annotations

from sparseft.settings import Calibration, OneShotSettings
from sparseft.stages.common import StageIO, input_tokenizer, report_log, require_tokenizer, stage_record


def calibration_batches_for(model, tokenizer, calib: Calibration, io: StageIO) -> list[dict]:
    """Model inputs from the calibration split of `calib.source`, shaped for the model's kind (token
    windows, text pairs or speech features: `sparseft.stages.tasks`); shared by oneshot, quantize, finetune."""
    from sparseft.stages.tasks import calibration_batches, task_of

    tokenizer = require_tokenizer(tokenizer, io, "calibration")
    return calibration_batches(task_of(model), model, tokenizer, calib)


def _calibration(settings: OneShotSettings, model) -> Calibration | None:
    """The given calibration (the model kind's defaults for what it leaves out), else the kind's default
    for data methods; magnitude uses data only when given (for its error report)."""
    from sparseft.stages.tasks import calibration_for, task_of

    if settings.calib is None and settings.method == "magnitude":
        return None
    return calibration_for(settings.calib, task_of(model))


def run_oneshot(settings: OneShotSettings, io: StageIO) -> dict:
    """Prune `io.input` one-shot; write the model, masks and record (per-layer errors) to `io.output`."""
    from sparseft.prune.allocation import Allocation
    from sparseft.prune.memory import peak_rss_mib
    from sparseft.prune.streaming import load_for_oneshot, oneshot_to_folder

    out = io.require_output("oneshot")
    model, stream = load_for_oneshot(io.input, io.dtype, settings.low_memory, trust_remote_code=io.trust_remote_code)
    tokenizer = input_tokenizer(io)
    calib = _calibration(settings, model)
    batches = calibration_batches_for(model, tokenizer, calib, io) if calib else None

    records: list[dict] = []

    def record(report) -> dict:
        # Peak memory of loading + pruning (streamed: + writing the blocks), before the final files.
        records.append(stage_record("oneshot", settings, io, low_memory=stream is not None,
                                    calibration=calib.model_dump(mode="json") if calib else None,
                                    peak_rss_before_save_mib=round(peak_rss_mib(), 1), **report.as_dict()))
        return records[-1]

    report = oneshot_to_folder(
        model, out, batches, stream=stream, tokenizer=tokenizer, record=record, overwrite=io.overwrite, method=settings.method,
        sparsity=settings.sparsity, nm=settings.nm, targets=settings.targets, ignore=settings.ignore,
        blocksize=settings.blocksize, percdamp=settings.percdamp, progress=settings.progress,
        device=settings.device, error_batches=settings.error_batches,
        allocation=Allocation(settings.allocation, settings.owl_lambda, settings.owl_threshold),
    )
    report_log.info(report.format())
    report_log.info("%s; peak memory %.0f MiB", "streamed block by block" if stream else "in memory", peak_rss_mib())
    return records[-1]
