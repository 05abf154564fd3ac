"""int4 values (formats.Int4): codes, group scales and nibble layout against a reference written out here,
and the runtime's tokens against the dense model that holds the same (dequantized) weights."""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import masked

from sparseft.errors import ConfigError
from sparseft.runtime import SparseLinear, compress, sparse_matmul
from sparseft.runtime.formats import get_format
from tiny_models import build_tiny_model

LAYER4 = "model.layers.0.mlp.up_proj"


def reference_int4(w: torch.Tensor) -> tuple[list[int], list[float]]:
    """Codes of the nonzeros (row-major) and the scales, one loop per group of 128 padded columns."""
    m, k = w.shape
    groups = ((k + 63) // 64 + 1) // 2
    codes, scales = [], []
    for r in range(m):
        for g in range(groups):
            cols = range(128 * g, min(128 * (g + 1), k))
            amax = max((abs(float(w[r, c])) for c in cols), default=0.0)
            scale = amax / 7 if amax > 0 else 1.0
            scales.append(scale)
            for c in cols:
                if w[r, c] != 0:
                    codes.append(int(max(-7, min(7, round(float(w[r, c]) / scale)))) + 8)
    return codes, scales


@pytest.mark.parametrize("shape", [(3, 5), (4, 130), (7, 300)])
def test_codes_scales_and_nibbles_match_the_reference(shape: tuple[int, int]) -> None:
    w = masked(shape, 0.5, seed=shape[1])
    cw = compress(w, "int4")
    codes, scales = reference_int4(w)
    torch.testing.assert_close(cw.scales, torch.tensor(scales), rtol=1e-6, atol=0)
    packed = cw.values[: (len(codes) + 1) // 2].tolist()
    assert [packed[i // 2] >> (4 * (i % 2)) & 15 for i in range(len(codes))] == codes  # first in the low nibble
    assert cw.values[(len(codes) + 1) // 2 :].eq(0).all() and cw.values.numel() == (len(codes) + 1) // 2 + 64
    assert (cw.decompress() - w).abs().max() <= w.abs().max() / 14 + 1e-7


def test_a_group_of_zeros_gets_scale_one_and_bytes_shrink() -> None:
    w = torch.zeros(2, 256)
    w[0, 3] = 1.4
    cw = compress(w, "int4")
    assert cw.scales.tolist() == pytest.approx([0.2, 1.0, 1.0, 1.0])
    dense = masked((64, 576), 0.7, seed=3)
    assert compress(dense, "int4").nbytes() < 0.8 * compress(dense, "int8").nbytes()


def test_delta_index_is_refused_and_given_scales_are_kept() -> None:
    with pytest.raises(ConfigError, match="bitmask index only"):
        compress(masked((4, 70), 0.5), "int4", index="delta")
    scales = torch.tensor([[0.5], [0.25], [2.0], [1.0]])
    on_grid = torch.randint(-7, 8, (4, 70)).float() * scales  # q * s with |q| <= 7, below max|row| / 7
    cw = compress(on_grid, "int4", scales=scales)
    assert torch.equal(cw.scales, scales.reshape(-1)) and torch.equal(cw.decompress(), on_grid)
    assert compress(masked((4, 70), 0.99), "int4", index="auto").index == "bitmask"


def test_odd_nibble_offsets_in_every_word(isa: str) -> None:
    """Rows of odd length start mid-byte: the kernels must read either nibble."""
    from sparseft.runtime.kernels import forced_isa

    w = torch.zeros(9, 200)
    for r in range(9):
        w[r, torch.arange(r % 3, 200, 2 + r % 3)] = torch.randn(len(range(r % 3, 200, 2 + r % 3)))
    cw = compress(w, "int4")
    assert (cw.rowptr[:-1] % 2 == 1).any()
    x = torch.randn(2, 200)
    ref = x.double() @ cw.decompress().double().T
    with forced_isa(isa):
        y = sparse_matmul(x, cw)
    assert ((y.double() - ref).abs().max() / ref.abs().max()) < 3e-4
    assert get_format("int4").bits == 4


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_runtime_tokens_equal_the_dequantized_dense_model(family: str) -> None:
    torch.manual_seed(0)
    model = build_tiny_model(family)
    dense = build_tiny_model(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(25.0 * (torch.rand(p.shape) >= (0.6 if ".layers." in name else 0.0)))
    dense.load_state_dict(model.state_dict())
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child_name != "lm_head":
                layer = SparseLinear.from_dense(child, "int4")
                setattr(module, child_name, layer)
                getattr(dense.get_submodule(name), child_name).weight.data.copy_(layer.compressed().decompress())
    prompt = torch.tensor([[1, 5, 9, 3, 7]])
    want = dense.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False), want)


@pytest.fixture(scope="module")
def int4_checkpoint(tmp_path_factory):
    from runtime_helpers import tiny_llama

    from sparseft.runtime import save_compressed, sparsify_model

    model = tiny_llama(0.7)
    sparsify_model(model, "int4")
    return save_compressed(model, tmp_path_factory.mktemp("ck4") / "model")


def _crafted(src, dst, tensors=None, meta=None):
    import shutil

    from crafted import edit_meta, edit_tensors, resign

    shutil.copytree(src, dst)
    if tensors:
        edit_tensors(dst, tensors)
    if meta:
        edit_meta(dst, meta)
    resign(dst)
    return dst


def _delta_mask(state: dict) -> None:
    """A delta index of the right length for the layer's values (what a crafted delta int4 layer holds)."""
    nnz = int(state[f"{LAYER4}.rowptr"][-1])
    state[f"{LAYER4}.mask"] = torch.zeros(nnz + 64, dtype=torch.uint8)


@pytest.mark.parametrize(
    "tensors,meta,message",
    [
        (lambda s: s.__setitem__(f"{LAYER4}.scales", s[f"{LAYER4}.scales"][:-1]), None, "scales"),
        (lambda s: s[f"{LAYER4}.scales"].__setitem__(0, 0.0), None, "scales must be positive"),
        (lambda s: s.__setitem__(f"{LAYER4}.values", s[f"{LAYER4}.values"][:10]), None, "values"),
        (_delta_mask, lambda m: m["layers"][LAYER4].__setitem__("index", "delta"), "bitmask index only"),
    ],
    ids=["short-scales", "zero-scale", "short-values", "delta-index"],
)
def test_crafted_int4_checkpoints_are_refused_clearly(int4_checkpoint, tmp_path, tensors, meta, message) -> None:
    from sparseft.errors import CheckpointError
    from sparseft.runtime import load_compressed

    load_compressed(int4_checkpoint)  # the untouched file loads
    bad = _crafted(int4_checkpoint, tmp_path / "bad", tensors, meta)
    with pytest.raises(CheckpointError, match=message):
        load_compressed(bad)

