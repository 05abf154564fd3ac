"""Every architecture family through the same stages: prune -> compress -> the sparse runtime.

The masks the prune stage writes are (out, in) for every layer type (GPT-2's Conv1D included), the
compress stage converts exactly those layers, and the reloaded compressed model computes what the masked
dense model computes (fp32 values: to float rounding; int8: to quantization error).
"""

import pytest
import torch

from sparseft.models import find_prunable, load_model, weight_matrix
from sparseft.prune import load_masks
from sparseft.runtime import SparseLinear
from sparseft.settings import CompressSettings, PruneSettings
from sparseft.stages import StageIO, run_compress, run_prune
from tiny_models import build_tiny_model, tiny_batches

FAMILIES = ["gpt2", "llama", "qwen2", "t5", "whisper"]


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_compress_runtime(family, tmp_path):
    build_tiny_model(family).save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.6), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    masked = load_model(tmp_path / "pruned")
    masks = load_masks(tmp_path / "pruned" / "masks.safetensors")
    layers = find_prunable(masked)
    assert set(masks) == set(layers)
    for name, module in layers.items():
        W = weight_matrix(module)  # (out, in), whatever the layer stores
        assert masks[name].shape == W.shape, name
        assert torch.equal(W != 0, masks[name]), name
        assert abs(float((~masks[name]).float().mean()) - 0.6) < 0.02

    batch = tiny_batches(masked, n_batches=1)[0]
    expected = _logits(masked, batch)
    for values, tolerance in (("fp32", 1e-4), ("int8", 0.05)):
        out = tmp_path / f"compressed-{values}"
        record = run_compress(CompressSettings(values=values), StageIO(str(tmp_path / "pruned"), out))
        assert record["layers"] == len(layers)
        sparse = load_model(out)
        converted = {n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)}
        assert converted == set(layers)
        got = _logits(sparse, batch)
        scale = expected.abs().max()
        assert float((got - expected).abs().max() / scale) < tolerance, (values, family)
