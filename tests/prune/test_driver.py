"""The sequential driver on tiny random models of each architecture family (built from configs)."""

from __future__ import annotations

import pytest
import torch

from sparseft.errors import ConfigError
from sparseft.models.walk import find_blocks, find_prunable, weight_matrix
from sparseft.prune.capture import BlockCall, capture_stack_inputs
from sparseft.prune.driver import oneshot
from tiny_models import build_tiny_model

VOCAB, SEQ = 96, 32


def tiny(family: str) -> torch.nn.Module:
    sizes = {"gpt2": {"n_positions": 64}, "llama": {"max_position_embeddings": 64},
             "t5": {}, "whisper": {"max_source_positions": 16}}[family]
    return build_tiny_model(family, vocab_size=VOCAB, **sizes)


def calib(family: str, n: int = 8, batch: int = 2, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n // batch):
        ids = torch.randint(3, VOCAB, (batch, SEQ), generator=g)
        if family in ("gpt2", "llama"):
            batches.append({"input_ids": ids})
        elif family == "t5":
            batches.append({"input_ids": ids, "decoder_input_ids": ids})
        else:
            feats = torch.randn(batch, 16, 32, generator=g)  # (batch, mel bins, 2 * max_source_positions)
            batches.append({"input_features": feats, "decoder_input_ids": ids})
    return batches


FAMILIES = ["gpt2", "llama", "t5", "whisper"]


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_inputs_replay_the_dense_forward(family):
    """Running the blocks from the captured calls reproduces each stack's output in the real forward."""
    model = tiny(family)
    batches = calib(family)
    blocks = find_blocks(model)
    for stack in dict.fromkeys(b.stack for b in blocks):
        stack_blocks = [b for b in blocks if b.stack == stack]
        expected: list[torch.Tensor] = []

        def keep_output(module, args, out, expected=expected):
            expected.append(out if isinstance(out, torch.Tensor) else out[0])

        hook = stack_blocks[-1].module.register_forward_hook(keep_output)
        with torch.no_grad():
            for b in batches:
                model(**b)
        hook.remove()
        with torch.no_grad():
            inputs = capture_stack_inputs(model, stack_blocks, batches)
            hidden = inputs.hidden
            for i, block in enumerate(stack_blocks):
                hidden = [c.run(block.module, h, None) for h, c in zip(hidden, inputs.calls[i], strict=True)]
        for got, want in zip(hidden, expected, strict=True):
            torch.testing.assert_close(got, want)


def test_t5_blocks_get_their_own_calls_and_llama_shares_one():
    """T5 hands block 0's position bias to later blocks, so one capture cannot serve all of them."""
    t5, llama = tiny("t5"), tiny("llama")
    with torch.no_grad():
        t5_in = capture_stack_inputs(t5, [b for b in find_blocks(t5) if b.stack == "encoder"], calib("t5"))
        llama_in = capture_stack_inputs(llama, find_blocks(llama), calib("llama"))
    assert not t5_in.calls[1][0].same_as(t5_in.calls[0][0])
    assert llama_in.calls[1][0].same_as(llama_in.calls[0][0])
    assert llama_in.calls[1][1] is llama_in.calls[0][1]  # after the probe, one capture per batch serves all
    assert isinstance(t5_in.calls[0][0], BlockCall)


def logits_error(dense: torch.nn.Module, pruned: torch.nn.Module, batches: list[dict]) -> float:
    with torch.no_grad():
        return sum(float(((dense(**b).logits - pruned(**b).logits) ** 2).mean()) for b in batches)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["50%", "2:4"])
def test_oneshot_hits_sparsity_and_beats_magnitude(family, nm):
    batches = calib(family)
    dense = tiny(family)
    results = {}
    for method in ("sparsegpt", "wanda", "magnitude"):
        model = tiny(family)
        # Errors on every batch for all methods, so that first-block errors compare like for like.
        report = oneshot(model, batches, method=method, sparsity=0.5, nm=nm, progress=False, error_batches=None)
        layers = find_prunable(model)
        assert [r.name for r in report.layers] == list(layers)
        for name, module in layers.items():
            W = weight_matrix(module)
            mask = report.masks[name]
            assert mask.shape == W.shape  # (out, in), also for GPT-2's Conv1D
            assert (W[~mask] == 0).all()
            if nm is None:
                assert float((W == 0).float().mean()) == pytest.approx(0.5, abs=1e-6)
            else:
                assert ((W != 0).reshape(W.shape[0], -1, 4).sum(-1) <= 2).all()
        results[method] = report, logits_error(dense, model, batches)
    (sgpt, sgpt_out), (mag, mag_out) = results["sparsegpt"], results["magnitude"]
    first_block = find_blocks(dense)[0].name + "."
    for s, m in zip(sgpt.layers, mag.layers, strict=True):
        if s.name.startswith(first_block):  # same inputs in both runs: a like-for-like comparison
            assert s.error <= m.error * (1 + 1e-4), s.name
    assert sum(r.error for r in sgpt.layers) < sum(r.error for r in mag.layers)
    assert sgpt_out < mag_out


def test_report_and_bad_settings():
    model = tiny("llama")
    report = oneshot(model, calib("llama"), method="wanda", sparsity=0.25, ignore=[r"mlp"], progress=False)
    assert all("mlp" not in r.name for r in report.layers) and len(report.layers) == 8
    assert "total" in report.format(max_rows=2) and report.as_dict()["method"] == "wanda"
    with pytest.raises(ConfigError):
        oneshot(model, calib("llama"), method="obs")
    with pytest.raises(ConfigError):
        oneshot(model, None, method="sparsegpt")
    with pytest.raises(ConfigError):
        oneshot(model, calib("llama"), targets=[r"lm_head"])


def test_explicit_device_gives_the_same_result():
    a, b = tiny("llama"), tiny("llama")
    ra = oneshot(a, calib("llama"), sparsity=0.5, progress=False)
    rb = oneshot(b, calib("llama"), sparsity=0.5, progress=False, device="cpu")
    assert all(torch.equal(ra.masks[k], rb.masks[k]) for k in ra.masks)


def test_magnitude_without_data():
    model = tiny("gpt2")
    report = oneshot(model, None, method="magnitude", sparsity=0.5, progress=False)
    assert report.total_sparsity == pytest.approx(0.5, abs=1e-6)
