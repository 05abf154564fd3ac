"""Encoder-decoder models (T5, Whisper) on the sparse runtime: prune -> compress -> generate().

The compressed model must give the masked dense model's greedy tokens exactly with fp32 values (and close
logits with bf16 / int8 values), and decode preparation must fuse only projections that read the same
input: in cross-attention, k/v (the encoder's states) but never q (the decoder's).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparseft.models import load_model
from sparseft.runtime import SparseLinear
from sparseft.runtime.fast_decode import greedy_decode, prepare_for_decode
from sparseft.runtime.fusion import FusedSibling
from sparseft.settings import CompressSettings, PruneSettings
from sparseft.stages import StageIO, run_compress, run_prune
from tiny_models import build_tiny_model, tiny_batches

NEW_TOKENS = 8
# T5's tiny config has no decoder start token; "t5-gated" has the gated feed-forward (wi_0 / wi_1).
OVERRIDES = {
    "t5": {"decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1},
    "t5-gated": {"decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
                 "feed_forward_proj": "gated-gelu"},
    "whisper": {},
}  # fmt: skip


def _tiny(family: str, scale: float = 25.0) -> nn.Module:
    """A tiny random model; its matrices times ``scale``, so that greedy decoding does not repeat one token."""
    model = build_tiny_model(family.split("-")[0], seed=0, **OVERRIDES[family])
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model


def _encoder_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    batch = tiny_batches(model, n_batches=1, batch=2, seq=10)[0]
    return {k: v for k, v in batch.items() if not k.startswith("decoder_")}


def _generate(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


def _pruned(family: str, tmp_path: Path, scale: float = 25.0) -> Path:
    _tiny(family, scale).save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.6), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    return tmp_path / "pruned"


def _compressed(pruned: Path, values: str) -> nn.Module:
    out = pruned.parent / f"compressed-{values}"
    run_compress(CompressSettings(values=values), StageIO(str(pruned), out))
    model = load_model(out)
    assert any(isinstance(m, SparseLinear) for m in model.modules())
    return model


@pytest.mark.parametrize("family", ["t5", "t5-gated", "whisper"])
def test_compressed_seq2seq_generates_the_masked_models_tokens(family: str, tmp_path: Path) -> None:
    pruned = _pruned(family, tmp_path)
    masked = load_model(pruned)
    inputs = _encoder_inputs(masked)
    expected = _generate(masked, inputs)
    assert len(set(expected[:, -NEW_TOKENS:].flatten().tolist())) > 2, "degenerate test: one repeated token"
    sparse = _compressed(pruned, "fp32")
    assert torch.equal(_generate(sparse, inputs), expected)
    prepare_for_decode(sparse, compile=False)  # fused projections: the same tokens
    assert torch.equal(_generate(sparse, inputs), expected)


@pytest.mark.parametrize("family", ["t5", "whisper"])
def test_bf16_and_int8_values_give_close_logits(family: str, tmp_path: Path) -> None:
    pruned = _pruned(family, tmp_path, scale=1.0)  # the initialiser's scale: rounding is not amplified
    masked = load_model(pruned)
    batch = tiny_batches(masked, n_batches=1)[0]
    with torch.no_grad():
        want = masked(**batch).logits
        for values, tolerance in (("fp32", 1e-5), ("bf16", 0.02), ("int8", 0.03)):
            got = _compressed(pruned, values)(**batch).logits
            assert float((got - want).abs().max() / want.abs().max()) < tolerance, values


def test_bf16_t5_runs_on_sparse_layers_that_report_their_weight(tmp_path: Path) -> None:
    # T5's feed-forward reads wo.weight to decide the dtype of its input: on a SparseLinear it must neither
    # fail nor cast (the layer takes any float input and returns the input's dtype).
    pruned = _pruned("t5", tmp_path)
    run_compress(CompressSettings(values="bf16"), StageIO(str(pruned), tmp_path / "c"))
    sparse = load_model(tmp_path / "c", "bfloat16")  # dense tensors in bf16, sparse ones as stored
    assert sparse.shared.weight.dtype == torch.bfloat16
    wo = sparse.encoder.block[0].layer[1].DenseReluDense.wo
    assert isinstance(wo, SparseLinear) and wo.weight.shape == (wo.out_features, wo.in_features)
    assert wo.weight.size(1) == wo.in_features and wo.weight.ndim == 2
    ids = _generate(sparse, _encoder_inputs(sparse))
    assert ids.shape == (2, NEW_TOKENS + 1)


def _cross_attention(model: nn.Module) -> list[nn.Module]:
    if model.config.model_type == "whisper":
        return [layer.encoder_attn for layer in model.model.decoder.layers]
    return [block.layer[1].EncDecAttention for block in model.decoder.block]


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("family", ["t5", "whisper"])
def test_cross_attention_fuses_only_keys_and_values(family: str, sparse: bool, tmp_path: Path) -> None:
    pruned = _pruned(family, tmp_path)
    model = _compressed(pruned, "fp32") if sparse else load_model(pruned)
    inputs = _encoder_inputs(model)
    expected = _generate(model, inputs)
    q, k = ("q_proj", "k_proj") if family == "whisper" else ("q", "k")
    unfused_q = [getattr(attn, q) for attn in _cross_attention(model)]
    groups = prepare_for_decode(model, compile=False)["fused"]
    assert any(".{" + q + "," in g for g in groups), groups  # self-attention q/k/v are fused
    calls: list[int] = []
    for attn, before in zip(_cross_attention(model), unfused_q, strict=True):
        assert getattr(attn, q) is before, "cross-attention q reads the decoder's states: never fused"
        kv = getattr(attn, k)
        assert isinstance(kv, FusedSibling) and kv.group.sizes == [kv.out_features] * 2
        assert kv.weight.shape == (kv.out_features, kv.in_features)  # answers like the nn.Linear it replaced
        kv.group.fused.register_forward_hook(lambda *_: calls.append(1))
    assert torch.equal(_generate(model, inputs), expected)
    # The encoder's states are projected to keys and values once per generate() (then cached); a group
    # holding q too would run again at every decoded token.
    assert len(calls) == len(unfused_q)


@pytest.mark.parametrize("family", ["t5", "whisper"])
def test_compiled_generate_gives_the_same_tokens(family: str, tmp_path: Path) -> None:
    # backend "eager": dynamo traces the step over HF's static cache without generating code (fast)
    pruned = _pruned(family, tmp_path)
    inputs = _encoder_inputs(load_model(pruned))
    expected = _generate(load_model(pruned), inputs)
    sparse = _compressed(pruned, "fp32")
    assert prepare_for_decode(sparse, compile=True, backend="eager")["compiled"]
    assert torch.equal(_generate(sparse, inputs), expected)


def test_greedy_decode_names_generate_for_encoder_decoder_models() -> None:
    from sparseft.errors import ConfigError

    with pytest.raises(ConfigError, match="model.generate"):
        greedy_decode(_tiny("whisper"), torch.tensor([[1, 2]]), 4)
