"""Layer statistics count only real positions: a padded calibration batch gives the Hessians its examples
give one at a time (checked against float64 Hessians from unpadded single-example forwards)."""

from __future__ import annotations

import pytest
import torch

from sparseft.models.walk import find_blocks, find_prunable
from sparseft.prune.capture import capture_stack_inputs
from sparseft.prune.stats import InputStats
from sparseft.prune.token_masks import TokenMasks, stack_token_masks
from tiny_models import build_tiny_model

VOCAB = 96
LENGTHS = [(9, 4), (5, 11), (12, 7)]  # (source tokens, label tokens) per example: every batch pads


def tiny(family: str) -> torch.nn.Module:
    sizes = {"llama": {"max_position_embeddings": 64}, "t5": {"decoder_start_token_id": 0}, "whisper": {"max_source_positions": 16}}[family]
    return build_tiny_model(family, vocab_size=VOCAB, **sizes).eval()


def examples(family: str) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    out = []
    for source, target in LENGTHS:
        if family == "llama":
            out.append({"input_ids": torch.randint(3, VOCAB, (1, source), generator=g)})
        elif family == "t5":
            out.append({"input_ids": torch.randint(3, VOCAB, (1, source), generator=g),
                        "labels": torch.randint(3, VOCAB, (1, target), generator=g)})
        else:
            out.append({"input_features": torch.randn(1, 16, 32, generator=g),
                        "labels": torch.randint(3, VOCAB, (1, target), generator=g)})
    return out


def padded(batch: list[dict]) -> dict:
    """The examples right-padded into one batch the way seq2seq_collate pads (labels -100, mask 0)."""
    out = {}
    if "input_features" in batch[0]:
        out["input_features"] = torch.cat([e["input_features"] for e in batch])
    for key, fill in (("input_ids", 0), ("labels", -100)):
        if key in batch[0]:
            width = max(e[key].shape[1] for e in batch)
            out[key] = torch.full((len(batch), width), fill, dtype=torch.long)
            for i, e in enumerate(batch):
                out[key][i, : e[key].shape[1]] = e[key][0]
    if "input_ids" in out:
        out["attention_mask"] = torch.zeros_like(out["input_ids"])
        for i, e in enumerate(batch):
            out["attention_mask"][i, : e["input_ids"].shape[1]] = 1
    return out


def reference_hessians(model, block, singles: list[dict]) -> dict[str, torch.Tensor]:
    """2/n sum x x^T in float64 over every input row of the block's layers, one unpadded example at a time."""
    layers = {n: m for n, m in find_prunable(model).items() if n.startswith(block.name + ".")}
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: rows[n].append(args[0].reshape(-1, args[0].shape[-1])))
             for n, m in layers.items()]
    with torch.no_grad():
        for example in singles:
            model(**example, use_cache=False)
    for h in hooks:
        h.remove()
    hessians = {}
    for name, xs in rows.items():
        x = torch.cat(xs).double()
        hessians[name] = 2 * x.T @ x / x.shape[0]
    return hessians


def padded_hessians(model, block, batches: list[dict], use_masks: bool) -> tuple[dict, dict]:
    stack_blocks = [b for b in find_blocks(model) if b.stack == block.stack]
    layers = {n: m for n, m in find_prunable(model).items() if n.startswith(block.name + ".")}
    with torch.no_grad():
        inputs = capture_stack_inputs(model, stack_blocks, batches)
        stats = InputStats(layers, hessian_batches=None, norms=False, block=block.module)
        for h, call, masks in zip(inputs.hidden, inputs.calls[0], inputs.masks, strict=True):
            stats.begin_batch(masks if use_masks else TokenMasks())
            call.run(block.module, h, None)
            stats.end_batch()
    out = {n: stats.hessian(n).double() for n in layers}, {n: stats.hessian_tokens(n) for n in layers}
    stats.remove()
    return out


@pytest.mark.parametrize("family", ["llama", "t5", "whisper"])
def test_padded_batches_give_the_unpadded_hessians(family):
    model = tiny(family)
    singles = examples(family)
    batches = [padded(singles[:2]), padded(singles[2:])]  # one padded pair, one single example
    for block in [b for b in find_blocks(model) if b.index == 0]:  # the first block of each stack
        want = reference_hessians(model, block, singles)
        got, tokens = padded_hessians(model, block, batches, use_masks=True)
        unmasked, _ = padded_hessians(model, block, batches, use_masks=False)
        for name, H in want.items():
            torch.testing.assert_close(got[name], H, rtol=1e-4, atol=1e-6, msg=f"{name} of {family}")
            cross = ("encoder_attn." in name or "EncDecAttention." in name) and name.endswith(("k_proj", "v_proj", ".k", ".v"))
            source = 16 * len(LENGTHS) if family == "whisper" else sum(s for s, _ in LENGTHS)  # 16 encoder frames
            own = source if family == "llama" or block.stack == "encoder" else sum(t for _, t in LENGTHS)
            assert tokens[name] == (source if cross else own), name
            padded_rows = family != "whisper" or (block.stack == "decoder" and not cross)  # Whisper's frames: no padding
            if padded_rows:  # the check can fail: without the masks the padding changes H
                assert not torch.allclose(unmasked[name], H, rtol=1e-3, atol=1e-5), f"{name}: padding never mattered"


def test_masks_by_stack():
    """Decoder-only: attention_mask; encoder: attention_mask; decoder of a seq2seq: labels != -100, attending
    to encoder states masked by attention_mask; a batch without padding has no mask at all."""
    t5, llama = tiny("t5"), tiny("llama")
    batch = padded(examples("t5")[:2])
    enc, dec = stack_token_masks(t5, batch, "encoder"), stack_token_masks(t5, batch, "decoder")
    assert torch.equal(enc.hidden, batch["attention_mask"].bool()) and enc.context is None
    assert torch.equal(dec.hidden, batch["labels"] != -100) and torch.equal(dec.context, enc.hidden)
    full = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    assert stack_token_masks(llama, full, "decoder") == TokenMasks()
    assert stack_token_masks(t5, batch, "decoder").fitted(torch.zeros(2, 3, 8)).hidden is None  # shape changed


@pytest.mark.parametrize("family", ["llama", "whisper"])
def test_head_hessian_leaves_padding_out(family):
    """GPTQ of the output projection (quantize --head) reads the same real positions as the blocks."""
    from sparseft.models.head import output_projection
    from sparseft.quant.head import head_hessian

    model = tiny(family)
    singles = examples(family)
    _, head = output_projection(model)
    rows: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda mod, args: rows.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for example in singles:
            model(**example)
    hook.remove()
    x = torch.cat(rows).double()
    want = 2 * x.T @ x / x.shape[0]
    got = head_hessian(model, [padded(singles[:2]), padded(singles[2:])]).double()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
