"""The finetune stage's GMP with OWL shares: each block ends at the sparsity OWL gives it on the dense model."""

import pytest
import torch

from sparseft.models import find_prunable, load_model
from sparseft.prune.allocation import Allocation, owl_layer_sparsities
from sparseft.settings import Calibration, FinetuneSettings
from sparseft.stages import StageIO, run_finetune
from sparseft.stages.oneshot import calibration_batches_for
from tiny_models import build_tiny_model, byte_tokenizer


def test_gmp_owl_ends_each_layer_at_its_owl_sparsity(tmp_path):
    dense = tmp_path / "dense"
    build_tiny_model("llama", seed=2, vocab_size=260, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=3).save_pretrained(dense)
    byte_tokenizer().save_pretrained(dense)
    settings = FinetuneSettings(
        teacher=None, data=["fortunes"], nsamples=16, seqlen=32, steps=4, batch_size=2, save_steps=4,
        loss={"task": 1.0, "squarehead": 0.0}, seed=0,
        gmp={"final_sparsity": 0.6, "end_step": 2, "frequency": 1, "scheme": "owl", "owl_lambda": 0.1},
    )  # fmt: skip
    run_finetune(settings, StageIO(str(dense), tmp_path / "out"))
    # the shares the stage must have used: OWL on the dense model, from the same calibration windows
    model = load_model(str(dense))
    calib = Calibration(source=["fortunes"], nsamples=32, seqlen=32, seed=0)
    batches = calibration_batches_for(model, byte_tokenizer(), calib, StageIO(str(dense)))
    expected = owl_layer_sparsities(model, batches, find_prunable(model), 0.6, Allocation("owl", lam=0.1))
    assert len(set(expected.values())) > 1  # not uniform: the comparison below means something
    trained = load_model(str(tmp_path / "out"))
    for name, module in find_prunable(trained).items():
        zeros = float((module.weight == 0).float().mean())
        assert zeros == pytest.approx(expected[name], abs=0.02), name
    total = sum(m.weight.numel() for m in find_prunable(trained).values())
    assert sum(int((m.weight == 0).sum()) for m in find_prunable(trained).values()) / total == pytest.approx(0.6, abs=0.01)
    assert torch.isfinite(next(trained.parameters())).all()
