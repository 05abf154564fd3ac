"""W8A8 on the runtime computes what the fake-quant W8A8 model (sparseft.quant.fakequant) computes.

The fake-quant model quantize-dequantizes activations per token and multiplies in fp32; the runtime's
W8A8 SparseLinear multiplies the same int8 values in int32 and scales once, so the two differ only by
fp32 rounding (and, through later layers, by the rare activation that rounding moves across a .5 step).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseft.prune import magnitude_prune
from sparseft.quant import compress_quantized, fake_quantize_per_token, fake_quantize_weight, quantize_model
from sparseft.runtime import SparseLinear, load_compressed, save_compressed
from sparseft.runtime.dense_batch import forced_dense_batches
from sparseft.runtime.kernels import forced_isa
from tiny_models import build_tiny_model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _sparse_linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(200, 48)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(48, 200) > 0.5)
        lin.weight[:, 7] *= 40  # an outlier input channel
    return lin


@pytest.mark.parametrize("tokens", [1, 5, 17])
def test_w8a8_linear_matches_fake_quant_layer(isa: str, tokens: int) -> None:
    lin = _sparse_linear()
    x = torch.randn(tokens, 200) * 3
    with torch.no_grad():
        fake = nn.functional.linear(fake_quantize_per_token(x), fake_quantize_weight(lin.weight), lin.bias)
        weight_only = nn.functional.linear(x, fake_quantize_weight(lin.weight), lin.bias)
        with forced_isa(isa):
            out = SparseLinear.from_dense(lin, "int8", act="dynamic-int8")(x)
    assert _rel(out, fake) < 1e-6
    assert _rel(out, fake) < _rel(weight_only, fake) / 100  # the activations really are int8


def test_custom_op_matches_eager() -> None:
    lin = _sparse_linear(1)
    layer = SparseLinear.from_dense(lin, "int8", act="dynamic-int8")
    x = torch.randn(2, 3, 200)
    eager = layer(x)
    op = torch.ops.sparseft.linear(x, layer.op_id, 48)
    assert torch.equal(eager, op) and eager.shape == (2, 3, 48)


def test_torch_compile_traces_the_w8a8_op() -> None:
    for act, scale in (("dynamic-int8", None), ("static-int8", 0.02)):
        layer = SparseLinear.from_dense(_sparse_linear(2), "int8", act=act, input_scale=scale)
        compiled = torch.compile(layer, backend="eager", fullgraph=True)
        x = torch.randn(3, 200)
        assert torch.equal(compiled(x), layer(x))


def _tiny_llama(scheme: str, ignore=None):
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    fq = quantize_model(model, scheme, masks=masks, ignore=ignore)
    return model, masks, fq


@pytest.mark.parametrize("scheme,ignore", [("w8a8", None), ("w8a8", [r"down_proj$"]), ("w8a16", None)])
def test_tiny_llama_on_runtime_matches_fake_quant_model(scheme: str, ignore) -> None:
    model, masks, fq = _tiny_llama(scheme, ignore)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = model(input_ids=ids).logits
        fq.remove()
        no_act_quant = model(input_ids=ids).logits
        names = compress_quantized(model, fq, masks=masks)
        with forced_dense_batches("off"):  # the sparse kernels (w8a16 at 24 rows would take dense bf16)
            out = model(input_ids=ids).logits
    acts = {n: model.get_submodule(n).act for n in names}
    assert len(names) == 14
    if scheme == "w8a16":
        assert set(acts.values()) == {"none"}
    else:
        down = {n for n in names if n.endswith("down_proj")}
        assert {acts[n] for n in set(names) - down} == {"dynamic-int8"}
        assert {acts[n] for n in down} == ({"none"} if ignore else {"dynamic-int8"})
        assert {model.get_submodule(n).fmt for n in down} == ({"fp32"} if ignore else {"int8"})
        assert _rel(no_act_quant, fake) > 1e-3  # activation quantization matters at this size
    assert _rel(out, fake) < 2e-4


def test_static_activation_scales_on_runtime() -> None:
    model = build_tiny_model("llama")
    masks = magnitude_prune(model, 0.5)
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 128, (2, 16), generator=g)} for _ in range(2)]
    fq = quantize_model(model, "w8a8-static", masks=masks, calib_batches=batches)
    ids = torch.randint(0, 128, (1, 12), generator=g)
    with torch.no_grad():
        fake = model(input_ids=ids).logits
        compress_quantized(model, fq, masks=masks)
        out = model(input_ids=ids).logits
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.act == "static-int8"
    assert layer.static_scale == float(fq.layers["model.layers.0.self_attn.q_proj"].input_scale)
    assert _rel(out, fake) < 2e-4


def test_w8a8_checkpoint_round_trip(tmp_path) -> None:
    model, masks, fq = _tiny_llama("w8a8", [r"down_proj$"])
    compress_quantized(model, fq, masks=masks)
    ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        save_compressed(model, tmp_path / "ckpt")
        loaded = load_compressed(tmp_path / "ckpt")
        after = loaded(input_ids=ids).logits
    assert loaded.model.layers[1].mlp.up_proj.act == "dynamic-int8"
    assert loaded.model.layers[1].mlp.down_proj.act == "none"
    assert torch.equal(before, after)


def test_int8_activations_need_int8_bitmask_values() -> None:
    from sparseft.errors import ConfigError

    with pytest.raises(ConfigError, match="int8 values"):
        SparseLinear.from_dense(nn.Linear(8, 4), "bf16", act="dynamic-int8")
    with pytest.raises(ConfigError, match="input_scale"):
        SparseLinear.from_dense(nn.Linear(8, 4), "int8", act="static-int8")
    with pytest.raises(ConfigError, match="activation mode"):
        SparseLinear.from_dense(nn.Linear(8, 4), "int8", act="int4")
