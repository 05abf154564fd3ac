"""The compressed bitmask weight format.

A dense weight W of shape (M, K) (out_features x in_features) is stored as:

- ``mask``: int64 tensor (M, KW), KW = ceil(K / 64). Row-major; bit j (least significant first) of
  ``mask[r, w]`` is 1 when column 64*w + j of row r is stored. Rows are padded to 64 columns (the
  AVX-512 width of int8 values) with zero bits. Bytes are little-endian, so the same buffer read as
  uint8 is ``numpy.packbits(bits, bitorder="little")`` of each padded row.
- ``values``: the stored values, row by row, in increasing column order, followed by 64 bytes of
  padding (vector loads of the AVX2 path may read up to 32 bytes past the last value).
  fp32: float32; bf16: bfloat16 (the value rounded to nearest even); int8: int8 ``q`` with
  ``W[r, c] = q * scales[r]`` (symmetric, ``scales[r] = max|W[r]| / 127``).
- ``rowptr``: int64 (M + 1), ``values[rowptr[r]:rowptr[r+1]]`` are row r's values.
- ``scales``: float32 (M,) for int8, empty otherwise.

Bytes read per weight at density d: fp32 4d + 1/8, bf16 2d + 1/8, int8 d + 1/8 (plus 8 bytes per row).

High-sparsity variant (``index="delta"``), for when the bitmask dominates (above ~90-95% zeros): ``mask``
is instead a uint8 tensor with one entry per stored value, the gap of zeros skipped before it
(column = previous column + gap + 1, starting from column -1 on each row), plus 64 bytes of padding. A
gap above 255 is bridged by filler entries that store a zero value 256 columns on (``nnz`` counts
them). Bytes per weight: (1 + value size) * d. ``index="auto"`` picks it below the densities in ``DELTA_BELOW`` (where it measured faster).

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

FORMATS = ("fp32", "bf16", "int8")
INDEXES = ("bitmask", "delta")
VALUE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
PAD_BYTES = 64


@dataclass
class CompressedWeight:
    """A weight matrix in the bitmask format (see the module docstring for the byte layout)."""

    fmt: str
    shape: tuple[int, int]
    mask: torch.Tensor
    values: torch.Tensor
    rowptr: torch.Tensor
    scales: torch.Tensor
    index: str = "bitmask"

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
        vals = self.values[: self.nnz].float()
        if self.fmt == "int8":
            vals = (
                vals * self.scales[torch.repeat_interleave(torch.arange(self.shape[0]), self.rowptr.diff())]
            )
        if self.index == "delta":
            dense[self._delta_rows(), self._delta_cols()] = vals
        else:
            dense[self.bits()] = vals
        return dense


def _quantize_rows(w: torch.Tensor, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: q = round(w / s), s = max|w| / 127 (1 for all-zero rows) unless given.

    Given scales (a quantized model's, e.g. GPTQ's: a row's largest |q| may be below 127) are kept as
    they are, so a weight already on the grid q * s gets back exactly its q."""
    if scales is None:
        amax = w.abs().amax(dim=1)
        scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    else:
        scales = _row_scales(scales, w.shape[0])
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales.float()


def _row_scales(scales: torch.Tensor, m: int) -> torch.Tensor:
    """(m,) fp32 scales from per-row ((m,) or (m, 1)) or per-tensor (one element) scales."""
    s = scales.detach().to("cpu", torch.float32).reshape(-1)
    if s.numel() == 1:
        s = s.expand(m)
    if s.numel() != m:
        raise ConfigError(f"expected {m} per-row int8 scales or one per-tensor scale, got {s.numel()}")
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ConfigError("int8 scales must be positive and finite")
    return s.contiguous()


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
# benchmarks/bench_high_sparsity.py): the fp32 bitmask kernel pays one expand per 16 columns whatever the
# density, the int8 one only one per 64 columns, so int8 keeps the bitmask longer. bf16: in between.
DELTA_BELOW = {"fp32": 0.10, "bf16": 0.05, "int8": 0.02}


def _choose_index(m: int, k: int, nnz: int, fmt: str) -> str:
    return "delta" if nnz < DELTA_BELOW[fmt] * m * k else "bitmask"


def compress(
    dense: torch.Tensor,
    fmt: str = "fp32",
    mask: torch.Tensor | None = None,
    index: str = "bitmask",
    scales: torch.Tensor | None = None,
) -> CompressedWeight:
    """Compress a 2-D weight (out_features, in_features); zeros (or ``~mask``) are not stored.

    ``index``: "bitmask" (default), "delta" (high sparsity) or "auto" (delta below ``DELTA_BELOW`` density).
    ``scales`` (int8 only): the int8 scales to use, per row ((M,) or (M, 1)) or per tensor, instead of
    max|row| / 127; a weight fake-quantized on these scales (q * s) compresses to exactly its q.

    >>> cw = compress(torch.tensor([[0.0, 2.0], [3.0, 0.0]]), "bf16")
    >>> cw.nnz, cw.mask.tolist()
    (2, [[2], [1]])
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown weight format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if dense.dim() != 2:
        raise ConfigError(f"expected a 2-D weight, got shape {tuple(dense.shape)}")
    if scales is not None and fmt != "int8":
        raise ConfigError(f"scales apply to int8 values only, not {fmt}")
    w = dense.detach().to("cpu", torch.float32)
    keep = (w != 0) if mask is None else mask.to("cpu", torch.bool) & (w != 0)
    w = w * keep
    m, k = w.shape
    if index == "auto":
        index = _choose_index(m, k, int(keep.sum()), fmt)
    if index not in INDEXES:
        raise ConfigError(f"unknown index {index!r}; expected one of {', '.join(INDEXES)} or auto")
    if index == "delta":
        return _compress_delta(w, keep, fmt, scales)
    kw = (k + 63) // 64
    padded = np.zeros((m, kw * 64), dtype=bool)
    padded[:, :k] = keep.numpy()
    mask_words = np.packbits(padded, axis=1, bitorder="little").view(np.int64).reshape(m, kw)
    rowptr = torch.zeros(m + 1, dtype=torch.int64)
    rowptr[1:] = keep.sum(dim=1).cumsum(0)
    if fmt == "int8":
        q, scales = _quantize_rows(w, scales)
        vals = q[keep]
    else:
        scales = torch.zeros(0, dtype=torch.float32)
        vals = w[keep].to(VALUE_DTYPES[fmt])
    dt = VALUE_DTYPES[fmt]
    pad = torch.zeros(PAD_BYTES // torch.empty(0, dtype=dt).element_size(), dtype=dt)
    return CompressedWeight(
        fmt=fmt,
        shape=(m, k),
        mask=torch.from_numpy(np.ascontiguousarray(mask_words)),
        values=torch.cat([vals, pad]),
        rowptr=rowptr,
        scales=scales,
    )


def _compress_delta(
    w: torch.Tensor, keep: torch.Tensor, fmt: str, scales: torch.Tensor | None = None
) -> CompressedWeight:
    m, _ = w.shape
    gaps, cols, counts = _delta_entries(keep.numpy())
    rows = torch.repeat_interleave(torch.arange(m), torch.from_numpy(counts))
    cols_t = torch.from_numpy(cols)
    rowptr = torch.zeros(m + 1, dtype=torch.int64)
    rowptr[1:] = torch.from_numpy(counts).cumsum(0)
    if fmt == "int8":
        q, scales = _quantize_rows(w, scales)
        vals = q[rows, cols_t]
    else:
        scales = torch.zeros(0, dtype=torch.float32)
        vals = w[rows, cols_t].to(VALUE_DTYPES[fmt])
    return CompressedWeight(
        fmt, tuple(w.shape), _pad(torch.from_numpy(gaps)), _pad(vals), rowptr, scales, "delta"
    )
