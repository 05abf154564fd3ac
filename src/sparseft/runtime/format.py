"""The compressed bitmask weight format.

A dense weight W of shape (M, K) (out_features x in_features) is stored as:

- ``mask``: int64 tensor (M, KW), KW = ceil(K / 64). Row-major; bit j (least significant first) of
  ``mask[r, w]`` is 1 when column 64*w + j of row r is stored. Rows are padded to 64 columns (the
  AVX-512 width of int8 values) with zero bits. Bytes are little-endian, so the same buffer read as
  uint8 is ``numpy.packbits(bits, bitorder="little")`` of each padded row.
- ``values``: the stored values, row by row, in increasing column order, followed by 64 bytes of
  padding (vector loads of the AVX2 path may read up to 32 bytes past the last value). Their encoding
  is the value format's (runtime/formats.py): fp32: float32; bf16: bfloat16 (the value rounded to
  nearest even); fp16: float16 (IEEE half); int8: int8 ``q`` with ``W[r, c] = q * scales[r]``
  (symmetric, ``scales[r] = max|W[r]| / 127``); int4: 4-bit codes, two per byte (the first value in
  the low nibble), with a scale per row and group of 128 columns (formats.Int4).
- ``rowptr``: int64 (M + 1), row r's values are values number rowptr[r] .. rowptr[r+1] - 1.
- ``scales``: float32 for formats with scales (int8: (M,); int4: one per row and group, flat), empty
  otherwise.

Bytes read per weight at density d: (value bytes) * d + 1/8, e.g. fp32 4d + 1/8, bf16 / fp16 2d + 1/8,
int8 d + 1/8 (plus 8 bytes per row).

High-sparsity variant (``index="delta"``), for when the bitmask dominates (above ~90-95% zeros): ``mask``
is instead a uint8 tensor with one entry per stored value, the gap of zeros skipped before it
(column = previous column + gap + 1, starting from column -1 on each row), plus 64 bytes of padding. A
gap above 255 is bridged by filler entries that store a zero value 256 columns on (``nnz`` counts
them). Bytes per weight: (1 + value size) * d. ``index="auto"`` picks it below each format's
``delta_below`` density (where it measured faster; ``DELTA_BELOW`` lists them).

    >>> w = torch.randn(8, 100) * (torch.rand(8, 100) > 0.7)
    >>> cw = compress(w, "fp32")
    >>> torch.equal(cw.decompress(), w)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparseft.errors import ConfigError
from sparseft.runtime.formats import FORMATS, PAD_BYTES, ValueFormat, get_format

__all__ = ["DELTA_BELOW", "DENSE_ABOVE", "FORMATS", "INDEXES", "PAD_BYTES", "CompressedWeight", "compress"]

INDEXES = ("bitmask", "delta")
#: No trained model's weight comes near this; a checkpoint beyond it is refused (its products would
#: overflow fp32 to inf/NaN in a layer or two).
MAX_ABS_WEIGHT = 1e6


@dataclass
class CompressedWeight:
    """A weight matrix in the bitmask format (see the module docstring for the byte layout).

    ``fmt`` is the value format's registered name; ``format`` the `ValueFormat` itself."""

    fmt: str
    shape: tuple[int, int]
    mask: torch.Tensor
    values: torch.Tensor
    rowptr: torch.Tensor
    scales: torch.Tensor
    index: str = "bitmask"

    @property
    def format(self) -> ValueFormat:
        """The value format (runtime/formats.py) of ``fmt``."""
        return get_format(self.fmt)

    @property
    def nnz(self) -> int:
        """Number of stored values (with the delta index: filler entries included)."""
        return int(self.rowptr[-1])

    @property
    def density(self) -> float:
        """Stored values / all weights."""
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def nbytes(self) -> int:
        """Bytes the kernels read (mask + values + rowptr + scales)."""
        return sum(t.numel() * t.element_size() for t in (self.mask, self.values, self.rowptr, self.scales))

    def bits(self) -> torch.Tensor:
        """The mask as a bool tensor (M, K)."""
        m, k = self.shape
        if self.index == "delta":
            bits = torch.zeros(m, k, dtype=torch.bool)
            bits[self._delta_rows(), self._delta_cols()] = True
            return bits & (self.decompress() != 0)  # fillers are not part of the mask
        packed = self.mask.contiguous().numpy().view(np.uint8).reshape(m, -1)
        return torch.from_numpy(np.unpackbits(packed, axis=1, bitorder="little")[:, :k].astype(bool))

    def _delta_rows(self) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(self.shape[0]), self.rowptr.diff())

    def _delta_cols(self) -> torch.Tensor:
        """Column of each stored entry of the delta index: per-row cumulative sum of (gap + 1), minus 1."""
        steps = self.mask[: self.nnz].long() + 1
        total = steps.cumsum(0)
        row_start = torch.cat([torch.zeros(1, dtype=torch.long), total])[self.rowptr[:-1]]
        return total - row_start[self._delta_rows()] - 1

    def decompress(self) -> torch.Tensor:
        """The dense fp32 weight the kernels compute with (exact for fp32 values).

        >>> compress(torch.eye(3), "int8").decompress()
        tensor([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]])
        """
        dense = torch.zeros(self.shape, dtype=torch.float32)
        rows, cols = self._positions()
        fmt = self.format
        dense[rows, cols] = fmt.decode(fmt.unpack(self.values, self.nnz), self.scales, rows, cols, self.shape)
        return dense

    def dense_codes(self) -> torch.Tensor:
        """The stored codes at their places and zeros elsewhere, (M, K) in the values' dtype: for int8
        weights the integers before their row scales (``decompress() == dense_codes() * scales[:, None]``).

        >>> compress(torch.eye(2) * 3, "int8").dense_codes()
        tensor([[127, 0], [0, 127]], dtype=torch.int8)
        """
        fmt = self.format
        codes = fmt.unpack(self.values, self.nnz)
        dense = torch.zeros(self.shape, dtype=codes.dtype)
        dense[self._positions()] = codes
        return dense

    def _positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the stored entries, in storage order."""
        cols = self._delta_cols() if self.index == "delta" else self.bits().nonzero()[:, 1]
        return self._delta_rows(), cols

    def validate(self) -> None:
        """Raise ConfigError unless the tensors fit the format, index and shape: the C kernels read them
        through raw addresses, so a wrong size would read out of bounds.

        >>> compress(torch.eye(3), "bf16").validate()      # fine: no error"""
        fmt, (m, k) = get_format(self.fmt), self.shape
        if self.index not in INDEXES:
            raise ConfigError(f"unknown index {self.index!r}; expected one of {', '.join(INDEXES)}")
        tensors = {"mask": self.mask, "values": self.values, "rowptr": self.rowptr, "scales": self.scales}
        if any(not t.is_contiguous() or t.device.type != "cpu" for t in tensors.values()):
            raise ConfigError("compressed weight tensors must be contiguous CPU tensors")
        fmt.validate(self.values, self.scales, m, k)
        if self.rowptr.dtype != torch.int64 or tuple(self.rowptr.shape) != (m + 1,):
            raise ConfigError(f"rowptr must be int64 of shape ({m + 1},), got {self.rowptr.dtype} {tuple(self.rowptr.shape)}")
        nnz = int(self.rowptr[-1])
        if int(self.rowptr[0]) != 0 or (m and bool((self.rowptr.diff() < 0).any())):
            raise ConfigError("rowptr must start at 0 and never decrease")
        want = fmt.stored_len(nnz) + fmt.pad_len
        if self.values.dim() != 1 or self.values.numel() < want:
            raise ConfigError(f"values must hold {nnz} stored values + {PAD_BYTES} bytes of padding ({want} "
                              f"{fmt.dtype} elements), got {self.values.numel()}")
        if self.index not in fmt.indexes:
            raise ConfigError(f"{fmt.name} values are stored with the {' / '.join(fmt.indexes)} index only")
        if self.index == "delta":
            if self.mask.dtype != torch.uint8 or self.mask.dim() != 1 or self.mask.numel() < nnz + PAD_BYTES:
                raise ConfigError(f"the delta index needs a uint8 mask of >= {nnz + PAD_BYTES} entries")
        elif self.mask.dtype != torch.int64 or tuple(self.mask.shape) != (m, (k + 63) // 64):
            raise ConfigError(f"the bitmask must be int64 of shape ({m}, {(k + 63) // 64}), got {tuple(self.mask.shape)}")

    def validate_contents(self) -> None:
        """Raise ConfigError unless the index agrees with the stored values and stays inside the matrix,
        and the values and scales are finite (scales positive): what a crafted file could get wrong that
        `validate`'s sizes do not show. Vectorised; run on untrusted input (checkpoints) before any kernel.

        >>> compress(torch.eye(3), "int8").validate_contents()"""
        self.validate()
        counts = self.rowptr.diff().numpy()
        if self.index == "bitmask":
            self._check_bitmask(counts)
        else:
            self._check_delta()
        fmt, nnz = get_format(self.fmt), self.nnz
        if self.values.dtype.is_floating_point and not bool((self.values[:nnz].float().abs() <= MAX_ABS_WEIGHT).all()):
            raise ConfigError(f"stored values hold NaN, infinity or magnitudes beyond {MAX_ABS_WEIGHT:g}")
        if fmt.has_scales and not bool(((self.scales > 0) & (self.scales <= MAX_ABS_WEIGHT / 127)).all()):
            raise ConfigError(f"scales must be positive and at most {MAX_ABS_WEIGHT / 127:g} (finite weights)")

    def _check_bitmask(self, counts: np.ndarray) -> None:
        m, k = self.shape
        words = self.mask.numpy().view(np.uint64)
        if not np.array_equal(np.bitwise_count(words).sum(axis=1, dtype=np.int64), counts):
            raise ConfigError("a row's bitmask marks a different number of columns than it stores values")
        if k % 64 and m and bool((words[:, -1] >> np.uint64(k % 64)).any()):
            raise ConfigError(f"the bitmask marks columns at or past the {k} inputs")

    def _check_delta(self) -> None:
        if self.nnz and not bool((self._delta_cols() < self.shape[1]).all()):
            raise ConfigError(f"the delta index steps past the {self.shape[1]} inputs of a row")


def tensor_sizes(m: int, k: int, nnz: int, fmt: str, index: str = "bitmask") -> dict[str, tuple[torch.dtype, tuple]]:
    """dtype and shape of each stored tensor of an (m, k) weight with `nnz` stored values."""
    vf = get_format(fmt)
    mask = (torch.uint8, (nnz + PAD_BYTES,)) if index == "delta" else (torch.int64, (m, (k + 63) // 64))
    return {
        "mask": mask,
        "values": (vf.dtype, (vf.stored_len(nnz) + vf.pad_len,)),
        "rowptr": (torch.int64, (m + 1,)),
        "scales": (torch.float32, (vf.scale_count(m, k),)),
    }


def empty_compressed(m: int, k: int, nnz: int, fmt: str, index: str = "bitmask") -> CompressedWeight:
    """Zero-filled tensors of the sizes `tensor_sizes` gives (a shell to load into)."""
    if index not in INDEXES:
        raise ConfigError(f"unknown index {index!r}; expected one of {', '.join(INDEXES)}")
    t = {name: torch.zeros(shape, dtype=dtype) for name, (dtype, shape) in tensor_sizes(m, k, nnz, fmt, index).items()}
    t["rowptr"][-1] = nnz
    return CompressedWeight(fmt, (m, k), t["mask"], t["values"], t["rowptr"], t["scales"], index)


def _delta_entries(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gaps uint8, columns, entries per row) of the delta index; fillers bridge gaps above 255."""
    gaps, cols, counts = [], [], []
    for row in keep:
        c = np.flatnonzero(row)
        g = np.diff(c, prepend=-1) - 1
        if g.size and g.max() > 255:  # rare: rebuild this row with fillers
            cc, gg, prev = [], [], -1
            for col in c:
                while col - prev - 1 > 255:
                    prev += 256
                    cc.append(prev)
                    gg.append(255)
                cc.append(col)
                gg.append(col - prev - 1)
                prev = col
            c, g = np.array(cc, dtype=np.int64), np.array(gg)
        gaps.append(g.astype(np.uint8))
        cols.append(c)
        counts.append(c.size)
    cat = np.concatenate
    return (
        cat(gaps) if gaps else np.zeros(0, np.uint8),
        cat(cols) if cols else np.zeros(0, np.int64),
        np.array(counts),
    )


def _pad(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, torch.zeros(PAD_BYTES // t.element_size(), dtype=t.dtype)])


# Densities below which the delta index runs faster than the bitmask (batch 1, 4096x4096, measured by
# benchmarks/bench_high_sparsity.py; each format's ``delta_below``): the fp32 bitmask kernel pays one
# expand per 16 columns whatever the density, the int8 one only one per 64 columns, so int8 keeps the
# bitmask longer. bf16: in between; fp16 (not measured) takes bf16's.
DELTA_BELOW = {name: get_format(name).delta_below for name in FORMATS}
# Weights at least this dense store every column, their zeros included (e.g. an lm_head dequantized from a
# 4-bit GGUF: ~1% exact zeros over nearly every row). Leaving out <= 5% of the values saves little, while a
# weight with every column stored runs batch-1 int8 kernels that read plain rows, no mask words and no
# expand (`WeightHandle.all_stored`; SmolLM2's int8 lm_head: 2.0 -> 0.8 ms per token).
DENSE_ABOVE = 0.95


def _choose_index(m: int, k: int, nnz: int, fmt: ValueFormat) -> str:
    if "delta" not in fmt.indexes:
        return "bitmask"
    return "delta" if nnz < fmt.delta_below * m * k else "bitmask"


def compress(
    dense: torch.Tensor,
    fmt: str | ValueFormat = "fp32",
    mask: torch.Tensor | None = None,
    index: str = "bitmask",
    scales: torch.Tensor | None = None,
    store_all: bool = False,
) -> CompressedWeight:
    """Compress a 2-D weight (out_features, in_features); zeros (or ``~mask``) are not stored, except in
    weights at least ``DENSE_ABOVE`` dense, which store every column, and with ``store_all``: every column,
    whatever its zeros (a dense weight whose zeros are rounding's, e.g. a GPTQ int4 lm_head with 27% of
    its codes 0, runs the kernels that read no mask).

    ``fmt``: a registered value format name (``FORMATS``: fp32, bf16, int8, fp16, int4) or a ValueFormat.
    ``index``: "bitmask" (default), "delta" (high sparsity) or "auto" (delta below ``DELTA_BELOW`` density).
    ``scales`` (int8 and int4): the scales to use instead of the weight's own (int8: per row, (M,) or (M, 1),
    or per tensor; int4: per row and group, (M, groups)); a weight fake-quantized on these scales (q * s)
    compresses to exactly its q.

    >>> cw = compress(torch.tensor([[0.0, 2.0], [3.0, 0.0]]), "bf16")
    >>> cw.nnz, cw.mask.tolist()
    (2, [[2], [1]])
    """
    vf = get_format(fmt)
    if dense.dim() != 2:
        raise ConfigError(f"expected a 2-D weight, got shape {tuple(dense.shape)}")
    w = dense.detach().to("cpu", torch.float32)
    keep = (w != 0) if mask is None else mask.to("cpu", torch.bool) & (w != 0)
    w = w * keep
    if store_all or (keep.numel() and keep.float().mean() >= DENSE_ABOVE):
        keep = torch.ones_like(keep)
    m, k = w.shape
    if index == "auto":
        index = _choose_index(m, k, int(keep.sum()), vf)
    if index not in INDEXES:
        raise ConfigError(f"unknown index {index!r}; expected one of {', '.join(INDEXES)} or auto")
    if index not in vf.indexes:
        raise ConfigError(f"{vf.name} values are stored with the {' / '.join(vf.indexes)} index only")
    q, scales = vf.encode(w, scales)
    if index == "delta":
        return _compress_delta(q, keep, vf, scales)
    kw = (k + 63) // 64
    padded = np.zeros((m, kw * 64), dtype=bool)
    padded[:, :k] = keep.numpy()
    mask_words = np.packbits(padded, axis=1, bitorder="little").view(np.int64).reshape(m, kw)
    rowptr = torch.zeros(m + 1, dtype=torch.int64)
    rowptr[1:] = keep.sum(dim=1).cumsum(0)
    return CompressedWeight(
        fmt=vf.name,
        shape=(m, k),
        mask=torch.from_numpy(np.ascontiguousarray(mask_words)),
        values=vf.pack(q[keep]),
        rowptr=rowptr,
        scales=scales,
    )


def _compress_delta(q: torch.Tensor, keep: torch.Tensor, vf: ValueFormat, scales: torch.Tensor) -> CompressedWeight:
    """The delta index of the stored values ``q`` (M, K) (fillers store a zero)."""
    m, _ = q.shape
    gaps, cols, counts = _delta_entries(keep.numpy())
    rows = torch.repeat_interleave(torch.arange(m), torch.from_numpy(counts))
    rowptr = torch.zeros(m + 1, dtype=torch.int64)
    rowptr[1:] = torch.from_numpy(counts).cumsum(0)
    vals = q[rows, torch.from_numpy(cols)]
    return CompressedWeight(vf.name, tuple(q.shape), _pad(torch.from_numpy(gaps)), _pad(vals), rowptr, scales, "delta")
