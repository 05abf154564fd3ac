"""The eval stage refuses to guess: no tokenizer, or one of another model, is a clear error."""

import pytest

from sparseft.cli import main
from sparseft.errors import ConfigError
from sparseft.settings import EvalSettings
from sparseft.stages import StageIO, run_eval
from tiny_models import build_tiny_model, byte_tokenizer


def byte_llama(**overrides):
    """A tiny Llama whose vocabulary fits the byte tokenizer (260 ids)."""
    return build_tiny_model("llama", **{"vocab_size": 260, "hidden_size": 32, "intermediate_size": 64, **overrides})


def test_eval_without_a_tokenizer_fails_clearly(tmp_path, capsys):
    build_tiny_model("llama").save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        run_eval(EvalSettings(data=["fortunes"], max_texts=2), StageIO(str(tmp_path / "m")))
    assert main(["eval", str(tmp_path / "m"), "--data", "fortunes"]) == 1
    err = capsys.readouterr().err
    assert "needs a tokenizer" in err and "Traceback" not in err


def test_eval_with_another_models_tokenizer_fails_clearly(tmp_path):
    build_tiny_model("llama").save_pretrained(tmp_path / "m")  # 128 embeddings
    byte_tokenizer().save_pretrained(tmp_path / "m")  # 258 tokens
    with pytest.raises(ConfigError, match="belongs to another model"):
        run_eval(EvalSettings(data=["fortunes"], max_texts=2), StageIO(str(tmp_path / "m")))


def test_eval_reports_each_source_with_its_tokens(tmp_path):
    byte_llama(num_hidden_layers=1).save_pretrained(tmp_path / "m")
    byte_tokenizer().save_pretrained(tmp_path / "m")
    (tmp_path / "a.txt").write_text("one text here\n\nand another one")
    record = run_eval(EvalSettings(data=["fortunes", str(tmp_path / "a.txt")], max_texts=3, seqlen=32),
                      StageIO(str(tmp_path / "m"), tmp_path / "out"))
    assert set(record["perplexity"]) == {"fortunes", str(tmp_path / "a.txt")}
    assert record["texts"][str(tmp_path / "a.txt")] == 2 and record["tokens"][str(tmp_path / "a.txt")] > 20
    assert (tmp_path / "out" / "stage.json").is_file()


def test_a_compressed_checkpoint_carries_its_tokenizer_and_scores_like_its_source(tmp_path):
    from sparseft.settings import CompressSettings, PruneSettings
    from sparseft.stages import run_compress, run_prune

    byte_llama().save_pretrained(tmp_path / "dense")
    byte_tokenizer().save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.6), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    run_compress(CompressSettings(values="fp32"), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))
    assert (tmp_path / "c" / "tokenizer.json").is_file()
    settings = EvalSettings(data=["fortunes"], max_texts=4, seqlen=64)
    source = run_eval(settings, StageIO(str(tmp_path / "pruned")))
    compressed = run_eval(settings, StageIO(str(tmp_path / "c")))  # no tokenizer given: its own
    assert compressed["tokens"] == source["tokens"]
    assert compressed["perplexity"]["fortunes"] == pytest.approx(source["perplexity"]["fortunes"], rel=1e-5)
    assert compressed["sparsity"] == pytest.approx(0.6, abs=0.01)
