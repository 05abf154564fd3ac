"""SparseLinear, the converter and generate() on a tiny random Llama; Conv1D; torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
from runtime_helpers import masked, tiny_llama
from torch import nn

from sparseft.runtime import SparseLinear, sparsify_model
from sparseft.runtime.convert import Int8Spec


def test_from_linear_matches_dense() -> None:
    lin = nn.Linear(70, 33)
    with torch.no_grad():
        lin.weight.copy_(masked((33, 70), 0.7))
    x = torch.randn(4, 70)
    torch.testing.assert_close(SparseLinear.from_dense(lin, "fp32")(x), lin(x), rtol=1e-5, atol=1e-5)


def test_from_conv1d_matches_dense() -> None:
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(33, 70)  # nf=33 outputs, nx=70 inputs, weight (70, 33)
    with torch.no_grad():
        conv.weight.copy_(masked((70, 33), 0.7))
        conv.bias.normal_()
    x = torch.randn(2, 5, 70)
    torch.testing.assert_close(SparseLinear.from_dense(conv, "fp32")(x), conv(x), rtol=1e-5, atol=1e-5)


def test_output_follows_input_dtype_and_model_to_keeps_format() -> None:
    sp = SparseLinear.from_dense(nn.Linear(16, 8), "int8")
    sp.to(torch.bfloat16)
    assert sp.values.dtype == torch.int8 and sp.scales.dtype == torch.float32
    assert sp(torch.randn(3, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_generate_fp32_gives_identical_tokens() -> None:
    model = tiny_llama(0.7)
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    ref = model.generate(ids, max_new_tokens=24, do_sample=False)
    dense_logits = model(ids).logits
    names = sparsify_model(model, "fp32")
    assert len(names) == 14 and all(isinstance(model.get_submodule(n), SparseLinear) for n in names)
    assert not isinstance(model.lm_head, SparseLinear)  # tied to the embeddings, no zeros
    torch.testing.assert_close(model(ids).logits, dense_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(model.generate(ids, max_new_tokens=24, do_sample=False), ref)


def test_tied_layer_asked_for_by_name_is_skipped_with_a_warning() -> None:
    model = tiny_llama(0.7)
    spec = Int8Spec(torch.full((model.lm_head.out_features,), 0.01))
    with pytest.warns(UserWarning, match="lm_head shares its weight"):
        names = sparsify_model(model, "int8", int8={"lm_head": spec})
    assert "lm_head" not in names and model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("fmt", ["bf16", "int8"])
def test_generate_bf16_int8_within_tolerance(fmt: str) -> None:
    model = tiny_llama(0.7)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(2))
    dense = model(ids).logits
    sparsify_model(model, fmt)
    err = (model(ids).logits - dense).abs().max() / dense.abs().max()
    assert err < (0.02 if fmt == "bf16" else 0.05)
    assert model.generate(ids, max_new_tokens=8, do_sample=False).shape == (1, 20)


def test_masks_and_filter_select_layers() -> None:
    model = tiny_llama(0.0)
    keep = torch.rand(128, 64) > 0.5
    names = sparsify_model(copy.deepcopy(model), masks={"model.layers.0.mlp.up_proj": keep})
    assert names == ["model.layers.0.mlp.up_proj"]
    assert sparsify_model(model) == []  # no zeros, nothing to convert
    names = sparsify_model(model, filter_fn=lambda name, m: name.endswith("down_proj"))
    assert names == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def test_torch_compile_traces_the_custom_op() -> None:
    sp = SparseLinear.from_dense(nn.Linear(32, 16), "bf16")
    x = torch.randn(2, 32)
    compiled = torch.compile(sp, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), sp(x))
