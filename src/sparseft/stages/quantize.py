"""The quantize stage: INT8 fake-quantization (W8A8 dynamic/static, or weight-only W8A16) keeping zeros,
and optionally the output projection by GPTQ (int4 or int8, `head`).

The output is an HF model folder with the dequantized weights, their scales and the input's masks;
`compress` then runs it on the int8 / W8A8 kernels with the same int8 values.

    >>> record = run_quantize(QuantizeSettings(scheme="w8a16"), StageIO("runs/sgpt50", Path("runs/sgpt50-w8")))
"""

from __future__ import annotations

from sparseft.settings import Calibration, QuantizeSettings
from sparseft.stages.common import StageIO, input_masks, load_input, report_log, stage_record
from sparseft.stages.oneshot import calibration_batches_for


def _sensitive_layers(settings: QuantizeSettings, model, batches, masks) -> tuple[list[str], list | None]:
    """(layers to leave in full precision, per-layer sensitivity rows) when asked for, else ([], None)."""
    from sparseft.quant import layer_sensitivity

    if not settings.wants_sensitivity:
        return [], None
    report = layer_sensitivity(model, batches, settings.targets, settings.ignore, settings.weights, masks)
    report_log.info(report.format(max_rows=20))
    kept = report.suggest_ignore(threshold=-1.0)[: settings.keep_sensitive]
    if kept:
        report_log.info("left in full precision: %s", ", ".join(kept))
    return kept, report.as_dict()["layers"]


def _calibration(settings: QuantizeSettings, model) -> Calibration:
    """The given calibration, else the model kind's default (the settings' default is for causal LMs); a
    calibration given without sources (`--nsamples 32` alone) reads the kind's sources with those sizes."""
    from sparseft.stages.tasks import task_of

    task, given = task_of(model), settings.calib
    if task.kind == "causal" or "calib" in settings.model_fields_set and "source" in given.model_fields_set:
        return given
    if "calib" not in settings.model_fields_set:
        return task.calib.model_copy(update={"nsamples": min(task.calib.nsamples, given.nsamples)})
    return task.calib.model_copy(update={name: getattr(given, name) for name in given.model_fields_set})


def run_quantize(settings: QuantizeSettings, io: StageIO) -> dict:
    """Quantize `io.input`; write the model, scales, masks and record to `io.output`."""
    from sparseft.quant import QuantScheme, quantize_model, save_quantized

    out = io.require_output("quantize")
    scheme = QuantScheme.parse(settings.scheme, settings.weights)
    model, tokenizer = load_input(io)
    masks = input_masks(io)
    batches = calibration_batches_for(model, tokenizer, _calibration(settings, model), io) if settings.needs_calibration else None
    kept, sensitivity = _sensitive_layers(settings, model, batches, masks)
    ignore = list(settings.ignore or []) + kept
    fq = quantize_model(model, scheme, settings.targets, ignore or None, masks, batches, settings.method)
    head = _quantize_head(settings, model, batches)
    record = stage_record("quantize", settings, io, scheme=scheme.name, quantized_layers=len(fq.layers),
                          ignored=ignore, sensitivity=sensitivity, head=head.record() if head else None)
    save_quantized(model, out, fq, tokenizer=tokenizer, masks=masks, record=record, overwrite=io.overwrite, head=head)
    return {**record, "quant": fq.record()}


def _quantize_head(settings: QuantizeSettings, model, batches):
    """GPTQ of the output projection on the inputs of the model quantized so far, when asked for."""
    from sparseft.quant import quantize_head

    if settings.head is None:
        return None
    head = quantize_head(model, batches, settings.head)
    report_log.info("%s: GPTQ %s, output error %.4g", head.name, head.fmt, head.error)
    return head
