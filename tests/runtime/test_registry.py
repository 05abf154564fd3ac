"""The value-format registry (runtime/formats.py): the C table agrees with it, formats carry their own
behaviour, and CompressedWeight / SparseLinear refuse tensors that do not fit their format."""

from __future__ import annotations

import pytest
import torch
from runtime_helpers import masked
from torch import nn

from sparseft.errors import ConfigError
from sparseft.runtime import _kernels
from sparseft.runtime.format import compress
from sparseft.runtime.formats import FORMATS, ValueFormat, check_kernel_table, get_format, register_format
from sparseft.runtime.linear import SparseLinear, WeightInfo


def test_c_table_matches_the_registry() -> None:
    table = _kernels.formats()
    assert {row[0] for row in table} == set(FORMATS)
    for name, kernel_id, size, has_scales in table:  # size: bits per value
        fmt = get_format(name)
        assert (fmt.kernel_id, fmt.bits, fmt.has_scales) == (kernel_id, size, has_scales)
    check_kernel_table(table)


def test_a_mismatched_c_table_is_refused() -> None:
    swapped = [(n, 1 - i if i < 2 else i, s, h) for n, i, s, h in _kernels.formats()]  # fp32 <-> bf16 ids
    with pytest.raises(ImportError, match="do not match"):
        check_kernel_table(swapped)
    with pytest.raises(ImportError, match="do not match"):
        check_kernel_table(_kernels.formats()[:-1])  # a format the kernels do not know


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    with pytest.raises(ConfigError, match="registered already"):
        register_format(get_format("bf16"))

    class Clash(ValueFormat):
        name, dtype, kernel_id = "clash", torch.float32, get_format("fp32").kernel_id

    with pytest.raises(ConfigError, match="is taken"):
        register_format(Clash())
    with pytest.raises(ConfigError, match="expected one of"):
        get_format("int3")


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_describes_its_tensors(fmt: str) -> None:
    vf = get_format(fmt)
    cw = compress(masked((9, 70), 0.5), fmt)
    assert cw.format is vf and cw.values.dtype == vf.dtype
    assert cw.scales.numel() == {"int8": 9, "int4": 9 * 1}.get(fmt, 0)  # int4: one group of 128 per row here
    cw.validate()
    assert cw.values.numel() == vf.stored_len(cw.nnz) + vf.pad_len
    expected = 9 * 2 * 8 + 10 * 8 + cw.values.numel() * vf.element_bytes + cw.scales.numel() * 4
    assert cw.nbytes() == expected


def test_validate_refuses_tensors_that_would_read_out_of_bounds() -> None:
    cw = compress(masked((6, 100), 0.5), "int8")
    bad = [
        {"values": cw.values.float()},  # wrong dtype
        {"values": cw.values[:4]},  # fewer values than rowptr says
        {"scales": cw.scales[:3]},  # int8 needs one scale per row
        {"rowptr": cw.rowptr.flip(0)},  # decreasing
        {"mask": cw.mask[:, :1]},  # bitmask too narrow
    ]
    for change in bad:
        broken = compress(masked((6, 100), 0.5), "int8")
        for k, v in change.items():
            setattr(broken, k, v.contiguous())
        with pytest.raises(ConfigError):
            broken.validate()
        with pytest.raises(ConfigError):
            SparseLinear(broken)


def test_weight_property_answers_like_nn_linear() -> None:
    layer = SparseLinear.from_dense(nn.Linear(70, 9), "fp16")
    info = layer.weight
    assert isinstance(info, WeightInfo) and not isinstance(info, torch.Tensor)
    assert info.shape == (9, 70) and info.dtype == torch.float32 and info.device.type == "cpu"
    x = torch.randn(2, 70)
    before = layer(x)
    layer.weight = nn.Parameter(torch.zeros(9, 70))  # what transformers' tie_weights does: ignored
    assert "weight" not in dict(layer.named_parameters()) and torch.equal(layer(x), before)


def test_fp16_layer_matches_a_float64_reference() -> None:
    lin = nn.Linear(130, 37)
    with torch.no_grad():
        lin.weight.copy_(masked((37, 130), 0.7) * 3)
    layer = SparseLinear.from_dense(lin, "fp16")
    x = torch.randn(4, 130, dtype=torch.bfloat16)
    ref = x.double() @ lin.weight.detach().half().double().T + lin.bias.detach().double()
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert (y.double() - ref).abs().max() <= 1e-2 * ref.abs().max()  # bf16 output rounding
