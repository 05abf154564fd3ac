"""Sensitivity report: errors recomputed independently for one layer; a planted outlier ranks first."""

import torch

from sparseft.models import find_prunable, weight_matrix
from sparseft.quant import fake_quantize_per_token, group_loss_sensitivity, layer_sensitivity
from tiny_models import build_tiny_model

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def test_errors_match_a_direct_computation():
    model = build_tiny_model("llama")
    name = "model.layers.1.mlp.up_proj"
    layer = find_prunable(model)[name]
    captured = {}
    hook = layer.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].clone()))
    report = layer_sensitivity(model, [{"input_ids": IDS}])
    hook.remove()
    x, W = captured["x"], weight_matrix(layer).detach()
    s = W.abs().amax(1, keepdim=True) / 127
    Wq = torch.round(W / s) * s
    y = x @ W.T
    row = next(r for r in report.layers if r.name == name)
    torch.testing.assert_close(torch.tensor(row.weight_error), ((x @ Wq.T - y).norm() / y.norm()) ** 2, rtol=1e-3, atol=0)
    xq = fake_quantize_per_token(x)
    torch.testing.assert_close(torch.tensor(row.w8a8_error), ((xq @ Wq.T - y).norm() / y.norm()) ** 2, rtol=1e-3, atol=0)
    assert [r.w8a8_error for r in report.layers] == sorted((r.w8a8_error for r in report.layers), reverse=True)


def test_weight_outlier_ranks_its_layer_first_and_is_suggested():
    model = build_tiny_model("gpt2")
    with torch.no_grad():
        weight_matrix(find_prunable(model)["transformer.h.0.attn.c_proj"])[:, 3] *= 300
    report = layer_sensitivity(model, [{"input_ids": IDS}])
    worst = max(report.layers, key=lambda r: r.weight_error)
    assert worst.name == "transformer.h.0.attn.c_proj"
    assert report.suggest_ignore(threshold=worst.weight_error / 2, key="weight_error") == [r"^transformer\.h\.0\.attn\.c_proj$"]
    assert "c_proj" in report.format(max_rows=3)


def test_group_loss_sensitivity_finds_the_damaged_kind_and_restores_the_model():
    model = build_tiny_model("llama")
    with torch.no_grad():  # one huge weight per row: int8 rounds every other weight of up_proj to 0
        for layer in model.model.layers:
            layer.mlp.up_proj.weight[:, 0] = 50.0
    batches = [{"input_ids": IDS}]
    before = model(input_ids=IDS).logits
    deltas = group_loss_sensitivity(model, batches, "w8a16")
    assert set(deltas) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert next(iter(deltas)) == "up_proj" and deltas["up_proj"] > 1.5 * max(abs(v) for k, v in deltas.items() if k != "up_proj")
    torch.testing.assert_close(model(input_ids=IDS).logits, before, rtol=0, atol=0)
