"""The runtime's int8 SparseLinear computes what the fake-quant (weight-only int8) layer computes.

The kernels quantize x per call to 16 bits inside the layer, so outputs agree to ~1e-4 relative, not
bit for bit.
"""

import pytest
import torch
from torch import nn

from sparseft import runtime
from sparseft.prune import magnitude_prune
from sparseft.quant import fake_quantize_weight, quantize_model
from sparseft.runtime.kernels import ISAS, best_isa, forced_isa
from tiny_models import build_tiny_model

AVAILABLE_ISAS = [isa for isa in ISAS if ISAS.index(isa) <= ISAS.index(best_isa())]


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("isa", AVAILABLE_ISAS)
@pytest.mark.parametrize("tokens", [1, 5])
def test_sparse_int8_linear_matches_fake_quant_layer(isa, tokens):
    torch.manual_seed(0)
    lin = nn.Linear(200, 48)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(48, 200) > 0.5)
        lin.weight[:, 7] *= 40  # an outlier column: per-row scales, so only its rows get coarse
    x = torch.randn(tokens, 200)
    fake = nn.functional.linear(x, fake_quantize_weight(lin.weight.detach()), lin.bias)
    exact = lin(x).detach()
    with forced_isa(isa), torch.no_grad():
        out = runtime.SparseLinear.from_dense(lin, "int8")(x)
    assert _rel(out, fake) < 1e-3
    assert _rel(out, fake) < _rel(exact, fake) / 5  # it is the int8 weight, not the float one


def test_tiny_llama_on_int8_kernels_matches_fake_quant_model():
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    float_model = build_tiny_model("llama")
    magnitude_prune(float_model, 0.5)
    quantize_model(model, "w8a16", masks=masks)
    ids = torch.randint(0, 128, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = model(input_ids=ids).logits
        unquantized = float_model(input_ids=ids).logits
        converted = runtime.sparsify_model(model, "int8", masks=masks)
        with runtime.forced_dense_batches("off"):  # the int8 kernels (10 rows would take the dense bf16 copy)
            out = model(input_ids=ids).logits
    assert len(converted) == 14 and isinstance(model.model.layers[0].mlp.down_proj, runtime.SparseLinear)
    assert _rel(out, fake) < 1e-3 and _rel(out, fake) < _rel(unquantized, fake) / 5
