"""Held-out scores during fine-tuning (`eval_steps`): the curve's points are the eval stage's numbers."""

import pytest

from sparseft.errors import ConfigError
from sparseft.settings import EvalSettings, FinetuneSettings
from sparseft.stages import StageIO, run_eval, run_finetune
from sparseft.train.heldout import HeldOutCallback, heldout_history
from tiny_models import build_tiny_model, byte_tokenizer


def _dense(tmp_path):
    dense = tmp_path / "dense"
    build_tiny_model("llama", seed=3, vocab_size=260, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2).save_pretrained(dense)
    byte_tokenizer().save_pretrained(dense)
    return dense


def _settings(**extra) -> FinetuneSettings:
    return FinetuneSettings(teacher=None, data=["fortunes"], nsamples=16, seqlen=32, steps=4, batch_size=2,
                            save_steps=4, learning_rate=3e-3, loss={"task": 1.0, "squarehead": 0.0}, **extra)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_heldout_curve_points_match_the_eval_stage(tmp_path, bf16):
    # bf16: the points are scored in full precision, not in the training's autocast
    dense = _dense(tmp_path)
    settings = _settings(eval_steps=2, eval_data=["fortunes", "austen"], eval_texts=8, bf16=bf16)
    record = run_finetune(settings, StageIO(str(dense), tmp_path / "out"))
    curve = heldout_history(record["log_history"])
    assert [p["step"] for p in curve] == [0, 2, 4]
    # the first point is the untrained model and the last the trained one, each scored by `sparseft eval`
    ends = [run_eval(EvalSettings(data=["fortunes", "austen"], max_texts=8, seqlen=128), StageIO(str(m)))
            for m in (dense, tmp_path / "out")]
    for point, record_ in ((curve[0], ends[0]), (curve[-1], ends[1])):
        for source in ("fortunes", "austen"):
            # the same computation: bf16 autocast would move the untrained model's ~265 by ~4e-5 relative
            assert point[source] == pytest.approx(record_["perplexity"][source], rel=1e-9)
    assert curve[-1]["fortunes"] != pytest.approx(curve[0]["fortunes"], rel=1e-3)  # training moved it


def test_heldout_rejects_sources_of_another_kind_before_training(tmp_path):
    with pytest.raises(ConfigError, match="librivox"):
        run_finetune(_settings(eval_steps=2, eval_data=["librivox"]), StageIO(str(_dense(tmp_path)), tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_callback_rejects_a_zero_interval():
    with pytest.raises(ValueError, match="every"):
        HeldOutCallback(lambda m: {}, 0)
