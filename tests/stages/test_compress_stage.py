"""The compress stage converts the layers of a masks file, else only those at a meaningful sparsity."""

import torch

from sparseft.models import find_prunable, load_model
from sparseft.runtime import SparseLinear
from sparseft.settings import CompressSettings
from sparseft.stages import StageIO, run_compress
from tiny_models import build_tiny_model


def test_without_masks_a_few_stray_zeros_do_not_make_a_layer_sparse(tmp_path):
    model = build_tiny_model("llama")
    layers = find_prunable(model)
    names = list(layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, name in enumerate(names):
            w = layers[name].weight
            keep = 0.4 if i % 2 == 0 else 0.99  # every other layer: 60% zeros, else 1% (like GGUF rounding)
            w.mul_(torch.rand(w.shape, generator=g) < keep)
    model.save_pretrained(tmp_path / "m")  # no masks file: the zeros are all there is
    record = run_compress(CompressSettings(values="bf16"), StageIO(str(tmp_path / "m"), tmp_path / "c"))
    sparse = {n for n, m in load_model(tmp_path / "c").named_modules() if isinstance(m, SparseLinear)}
    assert sparse == set(names[0::2])
    assert set(record["skipped_layers"]) == set(names[1::2])
    assert all(0 < z < 0.05 for z in record["skipped_layers"].values())
    everything = run_compress(CompressSettings(values="bf16", min_sparsity=0.0), StageIO(str(tmp_path / "m"), tmp_path / "c0"))
    assert everything["layers"] == len(names) and not everything["skipped_layers"]
