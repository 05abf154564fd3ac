"""Probe: what a 4-bit output projection costs SmolLM2-135M, round-to-nearest vs GPTQ.

The tied lm_head (49152 x 576) of the dense model is replaced by its int8 (per row) or int4 (a scale per
row and 128 columns, the `int4` format's grid: codes -7..7 on max|group| / 7) copy, and perplexity is
measured on the test splits (gsm: held-out templates; austen: Persuasion). GPTQ's Hessian comes from the
head's inputs (the final-norm hidden states) on 32 windows of 512 tokens of the train splits; its scales
are taken per group from the error-updated weights when the group starts (GPTQ's default), blocks of 128
columns = the format's groups. This is the measurement behind the issue-12 note "int4 needs GPTQ"; it
runs the library's solver and Hessian (`gptq_quantize_groups`, `quant.head.head_hessian`), the ones
`sparseft quantize --head int4` uses.

    python experiments/int4_head_gptq.py      # ~4 minutes on one core
"""

from __future__ import annotations

import torch
from torch import nn

from sparseft.data.calibration import calibration_batches
from sparseft.data.sources import load_texts
from sparseft.evaluate.perplexity import perplexity
from sparseft.models import load_model
from sparseft.models.loading import load_tokenizer
from sparseft.quant.gptq import gptq_quantize_groups, output_error
from sparseft.quant.head import head_hessian
from sparseft.runtime.format import compress


def int8_rtn(W: torch.Tensor) -> torch.Tensor:
    s = W.abs().amax(1, keepdim=True) / 127
    return torch.round(W / s).clamp(-127, 127) * s


def int4_rtn(W: torch.Tensor) -> torch.Tensor:
    """The `int4` format's own encoding, decoded."""
    return compress(W, "int4").decompress()


def main() -> None:
    torch.set_num_threads(1)
    model, tokenizer = load_model("smollm2-135m").eval(), load_tokenizer("smollm2-135m")
    calib = calibration_batches(tokenizer, load_texts(["gsm", "austen"], "train", 2000), nsamples=32, seqlen=512)
    H = head_hessian(model, calib)  # before the head is replaced: its inputs
    W = model.lm_head.weight.detach().clone().float()
    tests = {source: load_texts(source, "test", 40) for source in ("gsm", "austen")}
    model.lm_head = nn.Linear(W.shape[1], W.shape[0], bias=False)  # untied: the embedding keeps fp32
    for name, Wq in [("fp32", W), ("int8 RTN", int8_rtn(W)), ("int4 RTN", int4_rtn(W)), ("int4 GPTQ", gptq_quantize_groups(W, H).weight)]:
        model.lm_head.weight.data = Wq
        ppl = {source: round(perplexity(model, tokenizer, texts), 3) for source, texts in tests.items()}
        print(f"{name}: perplexity {ppl}, output error on H {output_error(W, Wq, H):.3g}", flush=True)


if __name__ == "__main__":
    main()
