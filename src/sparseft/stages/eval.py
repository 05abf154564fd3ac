"""The eval stage: perplexity on the test split of each data source, and the sparsity of the weights.

The default sources are in-domain (gsm: problems of templates never trained on) and out-of-domain
(austen: a novel never trained on); each is reported with its token count.

    >>> record = run_eval(EvalSettings(max_texts=50), StageIO("runs/sgpt50"))
    >>> record["perplexity"]
    {'gsm': 8.1, 'austen': 80.2}
"""

from __future__ import annotations

from sparseft.errors import ConfigError
from sparseft.settings import EvalSettings
from sparseft.stages.common import StageIO, load_input, report_log, require_tokenizer, stage_record


def run_eval(settings: EvalSettings, io: StageIO) -> dict:
    """Evaluate `io.input`; the record is also written to `io.output` when one is given."""
    from sparseft.data.sources import load_texts
    from sparseft.evaluate.perplexity import perplexity_report
    from sparseft.evaluate.sparsity import weight_sparsity
    from sparseft.models import load_tokenizer
    from sparseft.models.loading import check_seqlen
    from sparseft.models.saving import write_record

    model, tokenizer = load_input(io)
    if settings.tokenizer:
        tokenizer = load_tokenizer(settings.tokenizer, trust_remote_code=io.trust_remote_code)
    tokenizer = require_usable_tokenizer(model, require_tokenizer(tokenizer, io, "perplexity"), io)
    check_seqlen(model.config, settings.seqlen, "an evaluation window")
    results = {}
    for source in settings.data:
        texts = load_texts(source, "test", n=settings.max_texts)
        result = perplexity_report(model, tokenizer, texts, seqlen=settings.seqlen, progress=settings.progress,
                                   stride=settings.stride)
        results[source] = {"perplexity": result.perplexity, "tokens": result.tokens, "texts": len(texts)}
        report_log.info("%s: perplexity %.3f on %d tokens (%d texts, test split)", source, result.perplexity,
                        result.tokens, len(texts))
    record = stage_record(
        "eval", settings, io, model=str(io.input), sparsity=weight_sparsity(model),
        perplexity={s: r["perplexity"] for s, r in results.items()}, tokens={s: r["tokens"] for s, r in results.items()},
        texts={s: r["texts"] for s, r in results.items()},
    )  # fmt: skip
    if settings.gsm_accuracy:
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
