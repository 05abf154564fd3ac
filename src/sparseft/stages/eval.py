"""The eval stage: perplexity on the test split of a data source, and the sparsity of the weights.

    >>> record = run_eval(EvalSettings(data=["gsm"], max_texts=50), StageIO("runs/sgpt50"))
"""

from __future__ import annotations

from sparseft.settings import EvalSettings
from sparseft.stages.common import StageIO, load_input, require_tokenizer, stage_record


def run_eval(settings: EvalSettings, io: StageIO) -> dict:
    """Evaluate `io.input`; the record is also written to `io.output` when one is given."""
    from sparseft.data.sources import load_texts
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.evaluate.sparsity import weight_sparsity
    from sparseft.models import load_tokenizer
    from sparseft.models.saving import write_record

    model, tokenizer = load_input(io)
    if settings.tokenizer:
        tokenizer = load_tokenizer(settings.tokenizer, trust_remote_code=io.trust_remote_code)
    tokenizer = require_tokenizer(tokenizer, io, "perplexity")
    texts = load_texts(settings.data, "test", n=settings.max_texts)
    ppl = perplexity(model, tokenizer, texts, seqlen=settings.seqlen, progress=settings.progress)
    record = stage_record("eval", settings, io, model=str(io.input), texts=len(texts), perplexity=ppl,
                          sparsity=weight_sparsity(model))
    if io.output is not None:
        write_record(io.output, record)
    return record
