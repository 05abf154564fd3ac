"""The generic walker finds the right blocks and layers in every architecture family."""

import pytest
from torch import nn

from sparseft.models import find_blocks, find_prunable, weight_matrix
from tiny_models import build_tiny_model

# (block stack prefixes, prunable layers per block) for the tiny configs; written from each family's
# modeling code, independently of the walker.
EXPECTED = {
    "gpt2": (["transformer.h"], ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]),
    "llama": (["model.layers"], ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    "qwen2": (["model.layers"], ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    "mpt": (["transformer.blocks"], ["attn.Wqkv", "attn.out_proj", "ffn.up_proj", "ffn.down_proj"]),
    "opt": (["model.decoder.layers"], ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                                       "self_attn.out_proj", "fc1", "fc2"]),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_decoder_only_blocks_and_layers(family):
    model = build_tiny_model(family)
    stacks, per_block = EXPECTED[family]
    blocks = find_blocks(model)
    assert [b.name for b in blocks] == [f"{stacks[0]}.{i}" for i in range(2)]
    assert all(b.stack == "decoder" for b in blocks)
    expected = {f"{stacks[0]}.{i}.{layer}" for i in range(2) for layer in per_block}
    assert set(find_prunable(model)) == expected


def test_t5_encoder_and_decoder_stacks():
    model = build_tiny_model("t5")
    blocks = find_blocks(model)
    assert [(b.name, b.stack) for b in blocks] == [
        ("encoder.block.0", "encoder"), ("encoder.block.1", "encoder"),
        ("decoder.block.0", "decoder"), ("decoder.block.1", "decoder"),
    ]
    layers = find_prunable(model)
    assert "decoder.block.1.layer.1.EncDecAttention.k" in layers
    assert "encoder.block.0.layer.1.DenseReluDense.wo" in layers
    assert "lm_head" not in layers
    # 4 attention projections per attention, 2 FFN matrices; decoder blocks have self + cross attention.
    assert len(layers) == 2 * (4 + 2) + 2 * (4 + 4 + 2)


def test_whisper_stacks_exclude_proj_out_and_conv():
    model = build_tiny_model("whisper")
    blocks = find_blocks(model)
    assert [b.stack for b in blocks] == ["encoder"] * 2 + ["decoder"] * 2
    layers = find_prunable(model)
    assert "proj_out" not in layers
    assert not any("conv" in name or "embed" in name for name in layers)
    assert len(layers) == 2 * (4 + 2) + 2 * (4 + 4 + 2)


def test_targets_and_ignore_are_regexes():
    model = build_tiny_model("llama")
    only_mlp = find_prunable(model, targets=[r"\.mlp\."])
    assert only_mlp and all(".mlp." in n for n in only_mlp)
    no_down = find_prunable(model, ignore=r"down_proj$")
    assert len(no_down) == 2 * 6
    with_head = find_prunable(model, targets=[r"^lm_head$"])
    assert list(with_head) == ["lm_head"]


def test_weight_matrix_is_out_by_in_view():
    model = build_tiny_model("gpt2")
    c_fc = model.transformer.h[0].mlp.c_fc  # Conv1D: weight stored (in, out)
    w = weight_matrix(c_fc)
    assert w.shape == (c_fc.nf, c_fc.weight.shape[0])
    linear = nn.Linear(3, 5)
    assert weight_matrix(linear) is linear.weight
    with pytest.raises(TypeError):
        weight_matrix(nn.LayerNorm(3))
