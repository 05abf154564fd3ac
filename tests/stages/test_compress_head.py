"""`compress --head`: the output projection packed too, a tied one untied, everything else unchanged."""

import json

import pytest
import torch

from sparseft.cli import main
from sparseft.models import load_model
from sparseft.runtime import SparseLinear
from sparseft.settings import CompressSettings, PruneSettings
from sparseft.stages import StageIO, run_compress, run_prune
from tiny_models import build_tiny_model, tiny_batches


def _pruned(tmp_path, family: str, **overrides):
    build_tiny_model(family, seed=3, **overrides).save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.5), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    return load_model(str(tmp_path / "pruned")).eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("fmt, tolerance", [("fp32", 1e-5), ("int8", 0.03)])
def test_a_tied_lm_head_is_packed_and_the_embedding_kept(tmp_path, fmt, tolerance):
    masked = _pruned(tmp_path, "llama", tie_word_embeddings=True)
    assert masked.lm_head.weight is masked.get_input_embeddings().weight  # tied to begin with
    record = run_compress(CompressSettings(values="fp32", head=fmt), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))
    assert record["head"] == "lm_head"
    compressed = load_model(str(tmp_path / "c"))
    assert isinstance(compressed.lm_head, SparseLinear) and compressed.lm_head.fmt == fmt
    assert torch.equal(compressed.get_input_embeddings().weight, masked.get_input_embeddings().weight)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["tie_word_embeddings"] is False
    batch = tiny_batches(masked, n_batches=1)[0]
    want, got = _logits(masked, batch), _logits(compressed, batch)
    assert float((got - want).abs().max() / want.abs().max()) < tolerance


def test_without_head_the_tied_head_stays_tied_and_dense(tmp_path):
    _pruned(tmp_path, "llama", tie_word_embeddings=True)
    record = run_compress(CompressSettings(values="fp32"), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))
    compressed = load_model(str(tmp_path / "c"))
    assert record["head"] is None and not isinstance(compressed.lm_head, SparseLinear)
    assert compressed.lm_head.weight is compressed.get_input_embeddings().weight


def test_whisper_proj_out_is_packed_and_generates_the_same_tokens(tmp_path):
    masked = _pruned(tmp_path, "whisper")
    run_compress(CompressSettings(values="fp32", head="fp32"), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))
    compressed = load_model(str(tmp_path / "c"))
    assert isinstance(compressed.proj_out, SparseLinear)
    features = tiny_batches(masked, n_batches=1)[0]["input_features"]
    kwargs = {"max_new_tokens": 6, "do_sample": False}
    assert torch.equal(compressed.generate(features, **kwargs), masked.generate(features, **kwargs))
    # the packed head is dense and outside the blocks: the reported sparsity stays the pruned model's
    from sparseft.evaluate.sparsity import weight_sparsity

    blocks = [m.weight for n, m in masked.named_modules() if ".layers." in n and isinstance(m, torch.nn.Linear)]
    expected = sum(int((w == 0).sum()) for w in blocks) / sum(w.numel() for w in blocks)
    assert weight_sparsity(compressed) == pytest.approx(expected) == pytest.approx(weight_sparsity(masked))


def test_an_unknown_head_format_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="head"):
        CompressSettings(head="int3")
    _pruned(tmp_path, "llama")
    assert main(["compress", str(tmp_path / "pruned"), "--head", "int3", "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "--head" in err and "int8" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
