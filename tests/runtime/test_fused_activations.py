"""runtime/activations.py: HF's tanh-form GELU modules replaced by one fused op, the model's output unchanged."""

from __future__ import annotations

import math

import torch
from torch import nn

from sparseft.runtime.activations import fuse_activations
from sparseft.runtime.fast_decode import prepare_for_decode
from tiny_models import build_tiny_model


def tanh_gelu_by_hand(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_the_fused_op_is_the_tanh_formula() -> None:
    x = torch.linspace(-12, 12, 4001)
    torch.testing.assert_close(nn.GELU(approximate="tanh")(x).double(), tanh_gelu_by_hand(x), rtol=1e-5, atol=1e-6)


def test_gpt2_mlps_get_the_fused_op_and_the_same_logits() -> None:
    model = build_tiny_model("gpt2", activation_function="gelu_new")
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
        names = fuse_activations(model)
        out = model(ids).logits
    assert names == [f"transformer.h.{i}.mlp.act" for i in range(model.config.n_layer)]
    assert all(type(model.get_submodule(n)) is nn.GELU for n in names)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert fuse_activations(model) == []  # nothing left to replace


def test_prepare_for_decode_fuses_activations_only_with_fuse() -> None:
    model = build_tiny_model("gpt2", activation_function="gelu_new")
    assert prepare_for_decode(model, compile=False, fuse=False)["activations"] == []
    assert len(prepare_for_decode(model, compile=False)["activations"]) == model.config.n_layer
    llama = build_tiny_model("llama")  # SiLU: nothing to replace
    assert prepare_for_decode(llama, compile=False)["activations"] == []
