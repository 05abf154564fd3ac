"""Fused projections and the compiled decode path (runtime/fusion.py, runtime/fast_decode.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runtime_helpers import delta_formats, masked, tiny_llama
from torch import nn

from sparseft.runtime import FORMATS, SparseLinear, compress, sparsify_model
from sparseft.runtime.fast_decode import greedy_decode, prepare_for_decode
from sparseft.runtime.fusion import FusedSibling, concat_rows, fuse_projections
from tiny_models import build_tiny_model

PROMPT = torch.tensor([[1, 5, 9, 3, 7]])
SIBLINGS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
GRAPHS: list[torch.fx.GraphModule] = []


@torch._dynamo.register_backend(name="sparseft_test_count")
def _count_graphs(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    """torch.compile backend that records each graph dynamo hands over and runs it as traced."""
    GRAPHS.append(gm)
    return gm.forward


def sparse_tiny(family: str, fmt: str | None, sparsity: float = 0.7) -> nn.Module:
    """A tiny random model with larger weights (so greedy tokens vary), its block Linears pruned at random
    and, unless ``fmt`` is None, converted to SparseLinear with ``fmt`` values."""
    model = build_tiny_model(family, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(25.0)
                if ".layers." in name:
                    p.mul_(torch.rand(p.shape, generator=g) >= sparsity)
    if fmt is not None:
        sparsify_model(model, fmt)
    return model


def reference_generate(model: nn.Module, tokens: int) -> torch.Tensor:
    return model.generate(PROMPT, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


@pytest.mark.parametrize("index", ["bitmask", "delta"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_concat_rows_is_the_rows_of_each(fmt: str, index: str) -> None:
    if index == "delta" and fmt not in delta_formats():
        pytest.skip(f"{fmt} takes the bitmask index only")
    cws = [compress(masked((m, 100), 0.8, seed=m), fmt, index=index) for m in (7, 1, 20)]
    cat = concat_rows(cws)
    assert cat.shape == (28, 100) and cat.nnz == sum(cw.nnz for cw in cws)
    assert torch.equal(cat.decompress(), torch.cat([cw.decompress() for cw in cws]))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("fmt", ["fp32", "bf16", "int8", None])
def test_fused_projections_give_the_separate_outputs(family: str, fmt: str | None) -> None:
    model = sparse_tiny(family, fmt)
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    separate = {n: getattr(attn, n, None) or getattr(mlp, n) for n in SIBLINGS}
    x = torch.randn(3, 2, 64)
    before = {n: m(x) for n, m in separate.items()}
    groups = fuse_projections(model)
    assert len(groups) == 2 * model.config.num_hidden_layers
    for n, layer in separate.items():
        fused = getattr(attn, n, None) or getattr(mlp, n)
        assert isinstance(fused, FusedSibling)
        y = fused(x)
        # float64 reference on the weights the layer holds (the decompressed values for SparseLinear)
        w = layer.compressed().decompress() if isinstance(layer, SparseLinear) else layer.weight
        ref = x.double() @ w.double().T + (0 if layer.bias is None else layer.bias.double())
        tol = 1e-4 if fmt in ("fp32", None) else 2e-2  # bf16 / int8 kernels round x
        assert (y.double() - ref).abs().max() <= tol * ref.abs().max()
        if fmt is not None:  # the same stored values through the same kernel: the same outputs
            torch.testing.assert_close(y, before[n], rtol=1e-6, atol=1e-5)


def test_fused_group_recomputes_for_a_changed_input() -> None:
    model = sparse_tiny("llama", "fp32")
    fuse_projections(model)
    attn = model.model.layers[0].self_attn
    x = torch.randn(1, 1, 64)
    q1 = attn.q_proj(x)
    x.mul_(2.0)  # same tensor, new values: k must not come from the cached x
    k_expected = attn.q_proj.group.fused(x)[..., q1.shape[-1] : q1.shape[-1] + attn.k_proj.out_features]
    torch.testing.assert_close(attn.k_proj(x), k_expected)


def test_fused_model_keeps_each_weight_once_in_the_state_dict() -> None:
    model = sparse_tiny("llama", "bf16")
    fuse_projections(model)
    keys = [k for k in model.state_dict() if "layers.0.self_attn" in k]
    assert sum(k.endswith("values") for k in keys) == 2  # fused q/k/v + o_proj


def test_prepared_model_decodes_the_same_tokens_in_one_traced_graph() -> None:
    """fullgraph=True makes any graph break an error; the counting backend sees each graph dynamo makes."""
    model = sparse_tiny("llama", "fp32")
    ref = reference_generate(model, 12)
    info = prepare_for_decode(model, backend="sparseft_test_count", max_cache_len=32)
    assert info["attention"] and len(info["fused"]) == 4
    GRAPHS.clear()
    assert torch.equal(greedy_decode(model, PROMPT, 12), ref)
    assert torch.equal(greedy_decode(model, PROMPT, 8), ref[:, :13])  # same cache size: no new graph
    assert len(GRAPHS) == 1
    ops = [str(n.target) for n in GRAPHS[0].graph.nodes if n.op == "call_function"]
    # every sparse layer (fused q/k/v, o, fused gate/up, down) is one lean sparseft::linear call
    assert sum(op.startswith("sparseft.linear") for op in ops) == 4 * model.config.num_hidden_layers
    assert torch.equal(reference_generate(model, 12), ref)  # generate: static cache + compiled step


def test_greedy_decode_stops_at_eos() -> None:
    model = sparse_tiny("qwen2", "int8")
    ref = reference_generate(model, 10)
    eos = int(ref[0, PROMPT.shape[1] + 3])
    out = greedy_decode(model, PROMPT, 10, eos_token_id=eos, compile=False)
    first = PROMPT.shape[1] + int((ref[0, PROMPT.shape[1] :] == eos).nonzero()[0])
    assert torch.equal(out, ref[:, : first + 1])


def test_linear_op_matches_eager_layer() -> None:
    lin = nn.Linear(96, 40)
    with torch.no_grad():
        lin.weight.copy_(masked((40, 96), 0.7))
    layer = SparseLinear.from_dense(lin, "bf16")
    x = torch.randn(2, 96)
    ref = x.double() @ layer.compressed().decompress().double().T + lin.bias.double()
    op = torch.ops.sparseft.linear(x, layer.op_id, 40)
    torch.testing.assert_close(op, layer(x))
    assert (op.double() - ref).abs().max() < 1e-4 * ref.abs().max()
    x3 = torch.randn(2, 5, 96).transpose(0, 1)  # not contiguous, 3 dims
    torch.testing.assert_close(torch.ops.sparseft.linear(x3, layer.op_id, 40), layer(x3))


def test_linear_op_follows_replaced_weights() -> None:
    """The layer's packed kernel arguments are rebuilt when its buffers were replaced."""
    lins = [nn.Linear(64, 24) for _ in range(2)]
    with torch.no_grad():
        for seed, lin in enumerate(lins):
            lin.weight.copy_(masked((24, 64), 0.5, seed=seed))
    layer = SparseLinear.from_dense(lins[0], "int8")
    other = SparseLinear.from_dense(lins[1], "int8")
    x = torch.randn(3, 64)
    first = layer(x)  # packs the handle of the first weights
    for name in ("mask", "values", "rowptr", "scales", "rowsum", "bias"):  # new tensors, new addresses
        setattr(layer, name, getattr(other, name).clone())
    torch.testing.assert_close(torch.ops.sparseft.linear(x, layer.op_id, 24), other(x))
    torch.testing.assert_close(layer(x), other(x))
    assert (first - other(x)).abs().max() > 1e-3  # the weights really differ


def test_copied_layer_is_its_own_op_layer() -> None:
    """A deep copy gets its own op_id, so the compiled op of the copy computes with the copy's weights."""
    import copy

    layer = SparseLinear.from_dense(nn.Linear(32, 8), "fp32")
    clone = copy.deepcopy(layer)
    assert clone.op_id != layer.op_id
    with torch.no_grad():
        clone.values.mul_(2.0)  # in place: same addresses, so the packed handle stays valid
    x = torch.randn(1, 32)
    torch.testing.assert_close(
        torch.ops.sparseft.linear(x, clone.op_id, 8) - clone.bias, 2 * (layer(x) - layer.bias)
    )


@pytest.mark.slow
def test_inductor_compiled_decode_gives_the_eager_tokens() -> None:
    """The real compile (inductor, C++): ~15 s with a warm /tmp/torchinductor cache, ~2 min cold."""
    model = sparse_tiny("qwen2", "fp32")
    ref = reference_generate(model, 10)
    prepare_for_decode(model)
    assert torch.equal(greedy_decode(model, PROMPT, 10), ref)


def test_cli_bench_model_with_fused_projections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sparseft.cli import main

    tiny_llama(0.7).save_pretrained(tmp_path / "pruned")
    assert main(["compress", str(tmp_path / "pruned"), "--out", str(tmp_path / "c"), "--format", "bf16"]) == 0
    assert main(["bench", "--model", str(tmp_path / "c"), "--tokens", "4", "--threads", "1", "--fuse"]) == 0
    assert "tokens/s" in capsys.readouterr().out


@pytest.mark.parametrize("act,input_scale", [("dynamic-int8", None), ("static-int8", 0.05)])
def test_linear_op_runs_w8a8_layers(act: str, input_scale: float | None) -> None:
    """W8A8 layers go through the same op: the activation mode is data of the layer's handle."""
    lin = nn.Linear(128, 48)
    with torch.no_grad():
        lin.weight.copy_(masked((48, 128), 0.7))
    layer = SparseLinear.from_dense(lin, "int8", act=act, input_scale=input_scale)
    x = torch.randn(1, 3, 128)
    y = torch.ops.sparseft.linear(x, layer.op_id, 48)
    torch.testing.assert_close(y, layer(x), rtol=0, atol=1e-6)
    fp = SparseLinear.from_dense(lin, "int8")  # the same weights with fp32 activations differ
    assert (y - fp(x)).abs().max() > 1e-4


def test_compiled_generate_config_is_one_torch_compile_accepts() -> None:
    """HF's generate() passes its CompileConfig to torch.compile, which refuses a mode next to inductor
    options: `sparseft bench --compile` on Whisper failed so ("Either mode or options can be specified")."""
    model = sparse_tiny("whisper", "fp32")
    prepare_for_decode(model, fuse=False)
    config = model.generation_config.compile_config.to_dict()
    assert config["options"] and config["backend"] == "inductor"
    torch.compile(nn.Identity(), **config)  # raises when both are set; compiles nothing until called
