"""The eval stage: perplexity on the test split of each data source, and the sparsity of the weights.

The default sources are in-domain (gsm: problems of templates never trained on) and out-of-domain
(austen: a novel never trained on); each is reported with its token count.

    >>> record = run_eval(EvalSettings(max_texts=50), StageIO("runs/sgpt50"))
    >>> record["perplexity"]
    {'gsm': 8.1, 'austen': 80.2}
"""

from __future__ import annotations

from sparseft.settings import EvalSettings
from sparseft.stages.common import StageIO, load_input, report_log, require_tokenizer, stage_record


def run_eval(settings: EvalSettings, io: StageIO) -> dict:
    """Evaluate `io.input`; the record is also written to `io.output` when one is given."""
    from sparseft.data.sources import load_texts
    from sparseft.evaluate.perplexity import perplexity_report
    from sparseft.evaluate.sparsity import weight_sparsity
    from sparseft.models import load_tokenizer
    from sparseft.models.saving import write_record

    model, tokenizer = load_input(io)
    if settings.tokenizer:
        tokenizer = load_tokenizer(settings.tokenizer, trust_remote_code=io.trust_remote_code)
    tokenizer = require_tokenizer(tokenizer, io, "perplexity")
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
    if io.output is not None:
        write_record(io.output, record)
    return record
