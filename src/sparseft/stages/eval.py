"""The eval stage: the model kind's metric on the test split of each data source, and weight sparsity.

Causal LMs: perplexity; the default sources are in-domain (gsm: problems of templates never trained on)
and out-of-domain (austen: a novel never trained on), each reported with its token count. Speech models:
normalised WER of greedy transcripts (default: the real librivox and cards clips). Text seq2seq: BLEU of
greedy outputs (default gsm-en-de). The dispatch is `sparseft.stages.tasks`.

    >>> record = run_eval(EvalSettings(max_texts=50), StageIO("runs/sgpt50"))
    >>> record["perplexity"]
    {'gsm': 8.1, 'austen': 80.2}
    >>> run_eval(EvalSettings(data=["librivox"]), StageIO("whisper-tiny.en"))["wer"]
    {'librivox': 0.05}
"""

from __future__ import annotations

from sparseft.errors import ConfigError
from sparseft.settings import EvalSettings
from sparseft.stages.common import StageIO, load_input, report_log, require_tokenizer, stage_record


def run_eval(settings: EvalSettings, io: StageIO) -> dict:
    """Evaluate `io.input` with its kind's metric (`sparseft.stages.tasks`); the record is also written to
    `io.output` when one is given."""
    from sparseft.evaluate.sparsity import weight_sparsity
    from sparseft.models import load_tokenizer
    from sparseft.models.loading import check_seqlen
    from sparseft.models.saving import write_record
    from sparseft.stages.tasks import default_sources, describe_score, evaluate_source, task_of

    model, tokenizer = load_input(io)
    task = task_of(model)
    if settings.tokenizer:
        tokenizer = load_tokenizer(settings.tokenizer, trust_remote_code=io.trust_remote_code)
    tokenizer = require_tokenizer(tokenizer, io, task.metric)
    if task.kind == "causal":
        tokenizer = require_usable_tokenizer(model, tokenizer, io)
        check_seqlen(model.config, settings.seqlen, "an evaluation window")
    results = {}
    for source in default_sources(settings, "data", task, task.test):
        results[source] = evaluate_source(task, model, tokenizer, source, max_items=settings.max_texts,
                                          max_new_tokens=settings.max_new_tokens, seqlen=settings.seqlen,
                                          stride=settings.stride, progress=settings.progress)
        report_log.info(describe_score(task, source, results[source]))
    by_key = {key: {s: r[key] for s, r in results.items()} for key in next(iter(results.values()))}
    record = stage_record("eval", settings, io, model=str(io.input), model_kind=task.kind, metric=task.metric,
                          sparsity=weight_sparsity(model), **by_key)
    if settings.gsm_accuracy:
        if task.kind != "causal":
            raise ConfigError(f"--gsm-accuracy scores a causal LM's answers; {io.input} is a {task.kind} model")
        record["gsm_exact_match"] = _gsm_accuracy(model, tokenizer, settings)
    if io.output is not None:
        write_record(io.output, record)
    return record


def require_usable_tokenizer(model, tokenizer, io: StageIO):
    """The tokenizer, unless it has ids the model has no embedding for (a tokenizer of another model)."""
    rows = model.get_input_embeddings().num_embeddings if model.get_input_embeddings() is not None else None
    if rows is not None and len(tokenizer) > rows:
        raise ConfigError(f"the tokenizer found for {io.input} has {len(tokenizer)} tokens but the model embeds only "
                          f"{rows}: it belongs to another model; pass the right one with --tokenizer")
    return tokenizer


def _gsm_accuracy(model, tokenizer, settings: EvalSettings) -> dict:
    from sparseft.data.texts import gsm_problems, gsm_template_split
    from sparseft.evaluate.gsm import gsm_exact_match

    problems = [p for p in gsm_problems() if gsm_template_split(p.id_orig) == "test"][: settings.max_texts]
    result = gsm_exact_match(model, tokenizer, problems, settings.max_new_tokens, settings.progress)
    report_log.info("gsm exact match: %d / %d (%.1f%%)", result.correct, result.total, 100 * result.accuracy)
    return {"accuracy": result.accuracy, "correct": result.correct, "total": result.total}
