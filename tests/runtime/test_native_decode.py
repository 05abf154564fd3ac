"""The native decode step (runtime/native_decode.py, csrc/native_step.c) against HF's own decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runtime_helpers import tiny_llama
from test_fast_decode import sparse_tiny
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime import FORMATS, SparseLinear, _kernels, forced_isa, set_num_threads, sparsify_model
from sparseft.runtime.dense_batch import forced_dense_batches
from sparseft.runtime.fast_decode import prepare_for_decode
from sparseft.runtime.native_decode import NativeDecoder, unsupported_reason
from tiny_models import build_tiny_model

PROMPT = torch.tensor([[1, 5, 9, 3, 7, 2, 11]])
NEW = 12


@torch.no_grad()
def hf_steps(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's greedy tokens after PROMPT and the logits of the prompt's last position and of every decode step
    (token by token with a cache), every projection on the sparse kernels the native step runs (the
    prompt's batch of 7 rows would otherwise take the dense bf16 copy, runtime/dense_batch.py)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with forced_dense_batches("off"):
        out = model(input_ids=PROMPT, past_key_values=cache, use_cache=True)
    ids, logits = [int(out.logits[0, -1].argmax())], [out.logits[0, -1]]
    for _ in range(tokens - 1):
        out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=cache, use_cache=True)
        logits.append(out.logits[0, -1])
        ids.append(int(out.logits[0, -1].argmax()))
    return torch.tensor([ids]), torch.stack(logits)


def native_steps(model: nn.Module, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    decoder = NativeDecoder(model, max_positions=32)
    ids = [decoder.prefill(PROMPT)]  # the whole prompt in one native forward, projections at batch 7
    logits = [decoder.logits.clone()]
    for i in range(tokens - 1):
        ids.append(decoder.step(ids[-1], PROMPT.shape[1] + i))
        logits.append(decoder.logits.clone())
    return torch.tensor([ids]), torch.stack(logits)


def assert_same_decode(model: nn.Module, atol: float = 1e-5) -> None:
    ref_ids, ref_logits = hf_steps(model, NEW)
    ids, logits = native_steps(model, NEW)
    assert torch.equal(ids, ref_ids)
    assert ref_logits.std() > 0.1  # the test model's logits are not flat (else tokens would say nothing)
    # fp32 sums in another order: differences of a few ulps of the largest logit
    scale = float(ref_logits.abs().max())
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=atol * scale)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_dense_native_steps_give_hf_logits_and_tokens(family: str, isa: str) -> None:
    with forced_isa(isa):
        assert_same_decode(sparse_tiny(family, None))


@pytest.mark.parametrize("fmt", FORMATS)
def test_sparse_native_steps_give_the_sparse_models_logits(fmt: str, isa: str) -> None:
    model = sparse_tiny("qwen2", fmt)  # Qwen2: q/k/v with biases
    with forced_isa(isa):
        assert_same_decode(model, atol=1e-4)


def tiny_gpt2(fmt: str | None, sparsity: float = 0.7, **overrides: object) -> nn.Module:
    """A tiny random GPT-2 with larger weights (so greedy tokens vary), its block Conv1D weights pruned at
    random and, unless ``fmt`` is None, converted to SparseLinear with ``fmt`` values."""
    model = build_tiny_model("gpt2", seed=0, **overrides)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and ".h." in name:
                p.mul_(25.0 * (torch.rand(p.shape, generator=g) >= sparsity))
    if fmt is not None:
        sparsify_model(model, fmt)
    return model


@pytest.mark.parametrize("act", ["gelu_new", "gelu"])
@pytest.mark.parametrize("fmt", [None, *FORMATS])
def test_gpt2_native_steps_give_hf_logits(fmt: str | None, act: str, isa: str) -> None:
    """GPT-2 (learned positions, LayerNorm, fused q|k|v Conv1D with biases, tanh or exact GELU): dense
    Conv1D projections and every value format give HF's logits and tokens on every ISA path."""
    model = tiny_gpt2(fmt, activation_function=act)
    with forced_isa(isa):
        assert_same_decode(model, atol=1e-4)


def test_gpt2_generate_equals_hf_generate() -> None:
    model = tiny_gpt2("int8")
    ref = model.generate(PROMPT, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(NativeDecoder(model, 32).generate(PROMPT, NEW), ref)


def test_gpt2_positions_are_limited_by_its_position_table() -> None:
    with pytest.raises(ConfigError, match="at most 128"):
        NativeDecoder(tiny_gpt2(None), max_positions=129)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("act", ["dynamic-int8", "static-int8"])
def test_w8a8_layers_and_fused_groups_run_natively(act: str, fused: bool) -> None:
    model = sparse_tiny("llama", None)
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and name != "lm_head":
                setattr(parent, name, SparseLinear.from_dense(child, "int8", act=act, input_scale=0.5 if act == "static-int8" else None))
    model.lm_head = SparseLinear.from_dense(model.lm_head, "int8")
    if fused:
        assert prepare_for_decode(model, compile=False)["fused"]
    assert_same_decode(model, atol=1e-4)


def mistral(window: int | None) -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=128, sliding_window=window)
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(25.0)
    return model


def test_sliding_window_attention_matches_mistral() -> None:
    assert_same_decode(mistral(window=4))
    # the window decides what is attended: without it, the same weights give other logits
    assert not torch.allclose(hf_steps(mistral(window=None), NEW)[1], native_steps(mistral(window=4), NEW)[1])


def test_prompt_forward_fills_the_cache_with_hfs_keys_and_values() -> None:
    """The batched prompt forward writes HF's rotated keys and values at every prompt position, and nothing
    past them."""
    from transformers import DynamicCache

    model = sparse_tiny("llama", "int8")
    cache = DynamicCache()
    with torch.no_grad(), forced_dense_batches("off"):  # the sparse kernels, as the native prompt forward
        model(input_ids=PROMPT, past_key_values=cache, use_cache=True)
    decoder = NativeDecoder(model, max_positions=16)
    decoder.prefill(PROMPT)
    n = PROMPT.shape[1]
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(decoder.kcache[i, :, :n], layer.keys[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(decoder.vcache[i, :, :n], layer.values[0], rtol=1e-5, atol=1e-5)
    assert not decoder.kcache[:, :, n:].any() and not decoder.vcache[:, :, n:].any()


def test_two_threads_give_the_same_tokens() -> None:
    model = sparse_tiny("llama", "int8")
    ref = NativeDecoder(model, 32).generate(PROMPT, NEW)
    set_num_threads(2)
    try:
        assert torch.equal(NativeDecoder(model, 32).generate(PROMPT, NEW), ref)
    finally:
        set_num_threads(1)


def test_generate_equals_hf_generate_and_stops_at_eos() -> None:
    model = sparse_tiny("llama", "bf16")
    ref = model.generate(PROMPT, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    decoder = NativeDecoder(model, 32)
    assert torch.equal(decoder.generate(PROMPT, NEW), ref)
    eos = int(ref[0, PROMPT.shape[1] + 3])
    stopped = decoder.generate(PROMPT, NEW, eos_token_id=eos)
    assert int(stopped[0, -1]) == eos and stopped.shape[1] < ref.shape[1]
    assert torch.equal(stopped, ref[:, : stopped.shape[1]])


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: build_tiny_model("mpt"), "not one of the decoder classes"),
        (lambda: build_tiny_model("gpt2", activation_function="relu"), "activation 'relu'"),
        (lambda: build_tiny_model("gpt2", scale_attn_by_inverse_layer_idx=True), "attention scale"),
        (lambda: build_tiny_model("llama", hidden_act="gelu"), "hidden_act"),
        (lambda: build_tiny_model("llama").to(torch.bfloat16), "fp32 weights"),
        (lambda: build_tiny_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope type"),
        (lambda: build_tiny_model("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1),
         "mix full and sliding-window"),
    ],
)
def test_unsupported_models_are_refused_with_the_reason(make, reason: str) -> None:
    model = make()
    assert reason in (unsupported_reason(model) or "")
    with pytest.raises(ConfigError, match=reason):
        NativeDecoder(model)


def test_prompt_and_tokens_must_fit_the_cache() -> None:
    decoder = NativeDecoder(sparse_tiny("llama", None), max_positions=10)
    with pytest.raises(ConfigError, match="max_positions=10"):
        decoder.generate(PROMPT, 4)
    with pytest.raises(ConfigError, match="batch 1"):
        decoder.generate(PROMPT.repeat(2, 1), 2)
    with pytest.raises(ValueError, match="position"):
        decoder.step(1, 10)  # the C side checks too


def test_a_description_with_wrong_sizes_is_refused_by_the_c_side() -> None:
    decoder = NativeDecoder(sparse_tiny("llama", None), max_positions=8)
    model = decoder.model
    model.model.layers[1].mlp.down_proj = nn.Linear(64, 64)  # MLP width 128 expected as its input
    with pytest.raises(ValueError, match=r"down \(fc2\) projection"):
        NativeDecoder(model, max_positions=8)
    ints = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="bad sizes"):
        _kernels.native_new(ints.data_ptr(), 3, 0, 0)


def test_cli_bench_native_times_model_and_baseline_natively(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from sparseft.cli import main

    tiny_llama(0.7).save_pretrained(tmp_path / "pruned")
    assert main(["compress", str(tmp_path / "pruned"), "--out", str(tmp_path / "c"), "--format", "int8"]) == 0
    assert main(["bench", "--model", str(tmp_path / "c"), "--baseline", str(tmp_path / "pruned"), "--tokens", "4",
                 "--threads", "1", "--fuse", "--native", "--out", str(tmp_path / "b")]) == 0
    record = json.loads((tmp_path / "b" / "stage.json").read_text())
    assert record["decode_paths"] == {"model": "native", "baseline": "native"}
    assert record["output_tokens"]["model"] == [int(record["output_tokens"]["baseline"][0])]


@pytest.mark.parametrize("values", ["int8", "w8a8"])
def test_a_long_prompt_prefills_through_the_models_forward(values: str) -> None:
    """From LONG_PROMPT tokens (where the CPU runs large batches as dense products) the prompt goes through
    the model's own forward: the cache holds HF's keys / values and the first new token is HF generate's
    (whose prompt takes the same dense products). Later tokens are the native steps' (tested above; with
    int8 activations a last-ulp difference may flip a rounding, so they are not compared here)."""
    from transformers import DynamicCache

    from sparseft.runtime.dense_batch import forced_dense_batches
    from sparseft.runtime.native_decode import LONG_PROMPT

    model = sparse_tiny("llama", "int8")
    if values == "w8a8":
        for name, layer in list(model.named_modules()):
            if isinstance(layer, SparseLinear):
                w8a8 = SparseLinear(layer.compressed(), layer.bias, act="dynamic-int8")
                model.get_submodule(name.rpartition(".")[0]).register_module(name.rpartition(".")[2], w8a8)
    n = LONG_PROMPT[values == "w8a8"]
    prompt = torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(3))
    with forced_dense_batches("on"):
        decoder = NativeDecoder(model, max_positions=n + NEW)
        assert decoder._long_prompt() == n
        ids = decoder.generate(prompt, NEW)
        with torch.no_grad():
            ref = model.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
            cache = DynamicCache()
            model(input_ids=prompt, past_key_values=cache, use_cache=True)
    assert torch.equal(ids[:, : n + 1], ref[:, : n + 1])
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(decoder.kcache[i, :, :n], layer.keys[0], rtol=1e-5, atol=1e-5)
    with forced_dense_batches("off"):
        assert NativeDecoder(model, max_positions=n + NEW)._long_prompt() == 0  # the native prompt forward
