"""The registry of compressed value formats: one `ValueFormat` per name (fp32, bf16, int8, fp16, int4).

A format says how the stored values of a sparse weight are encoded: their dtype, how dense fp32
weights become stored values (``encode``, with per-row scales for int8) and back (``decode``), what
its tensors must look like (``validate``), its bytes per value and the id of its C kernels. Everything
else (`compress`, `CompressedWeight`, `SparseLinear`, checkpoints, the converter) finds formats here:

    >>> get_format("int8").has_scales, get_format("bf16").value_bits, get_format("int4").value_bits
    (True, 16, 4)
    >>> FORMATS
    ('fp32', 'bf16', 'int8', 'fp16', 'int4')

Adding a format (see `Fp16`): a subclass registered with ``register_format``, plus its C decode step in
each kernel (csrc/sparse_common.h lists where) and its row in the C table ``SP_FORMATS`` (module.c);
`check_kernel_table` (run when the kernels are imported) refuses a registry and C table that disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sparseft.errors import ConfigError

PAD_BYTES = 64  # zero bytes after the stored values: vector loads of the kernels may read that far
FP16_MAX = 65504.0


class ValueFormat:
    """Base of the value formats: plain float values with no scales (subclass and register an instance).

    Class attributes a format sets: ``name``, ``dtype`` (of the stored tensor), ``kernel_id`` (the C
    enum value), ``value_bits`` (bits per stored value, when several share one element: int4), ``delta_below``
    (density below which ``index="auto"`` picks the delta index; 0 = never), ``amx_min_batch`` (smallest
    batch run on the AMX kernels in "auto" mode; 0 = never), ``int_sum_max_k`` (integer values: the widest
    input whose int32 sums in the VNNI / AMX / W8A8 kernels stay exact; None for float values),
    ``group_columns`` (scales per row and group of this many columns, 0 = one per row), ``indexes`` (the
    index layouts its kernels read: "bitmask", "delta"), and the
    capabilities ``has_scales``, ``supports_int8_activations`` (W8A8 kernels) and ``dense_bf16`` (large
    batches may run on a dense bf16 copy, runtime/dense_batch.py: values no finer than bf16's 8 bits)."""

    name: str
    dtype: torch.dtype
    kernel_id: int
    value_bits: int | None = None
    delta_below: float = 0.05
    amx_min_batch: int = 0
    int_sum_max_k: int | None = None
    group_columns: int = 0
    indexes: tuple[str, ...] = ("bitmask", "delta")
    has_scales: bool = False
    supports_int8_activations: bool = False
    dense_bf16: bool = False

    @property
    def element_bytes(self) -> int:
        """Bytes per element of the stored tensor."""
        return torch.empty(0, dtype=self.dtype).element_size()

    @property
    def bits(self) -> int:
        """Bits per stored value."""
        return self.value_bits or 8 * self.element_bytes

    def stored_len(self, nnz: int) -> int:
        """Elements of the values tensor that hold ``nnz`` values, before the padding."""
        return nnz

    @property
    def pad_len(self) -> int:
        """Elements of zero padding after the values (PAD_BYTES)."""
        return PAD_BYTES // self.element_bytes

    def scale_count(self, rows: int, cols: int) -> int:
        """Number of fp32 scales of a (rows, cols) weight."""
        return rows if self.has_scales else 0

    def encode(self, w: torch.Tensor, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the code of every entry of ``w`` (M, K) fp32, one element each; the scales, flat, or empty)."""
        if scales is not None:
            raise ConfigError(f"given scales apply to the formats with scales (int8, int4), not {self.name}")
        return w.to(self.dtype), torch.zeros(0, dtype=torch.float32)

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        """The values tensor of the stored codes (1-D, in storage order), padding included."""
        return torch.cat([codes, torch.zeros(self.pad_len, dtype=codes.dtype)])

    def unpack(self, values: torch.Tensor, nnz: int) -> torch.Tensor:
        """The ``nnz`` codes of a values tensor, one element each (inverse of `pack`)."""
        return values[:nnz]

    def decode(self, codes: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
        """fp32 weights of the stored ``codes`` at (``rows``, ``cols``) of a weight of ``shape``."""
        return codes.float()

    def row_sums(self, values: torch.Tensor, rowptr: torch.Tensor) -> torch.Tensor:
        """Per-row sums the kernels need (int8: the VNNI offset correction); empty int32 otherwise."""
        return torch.zeros(0, dtype=torch.int32)

    def validate(self, values: torch.Tensor, scales: torch.Tensor, rows: int, cols: int) -> None:
        """Raise ConfigError unless ``values`` / ``scales`` are this format's dtypes and sizes."""
        if values.dtype != self.dtype:
            raise ConfigError(f"{self.name} values must be {self.dtype}, got {values.dtype}")
        want = self.scale_count(rows, cols)
        if scales.dtype != torch.float32 or scales.dim() != 1 or scales.numel() != want:
            raise ConfigError(
                f"{self.name} weights need {want} float32 scales, got {scales.dtype} {tuple(scales.shape)}"
            )

    def __repr__(self) -> str:
        return f"<value format {self.name}>"


class Fp32(ValueFormat):
    """fp32 values, stored exactly."""

    name, dtype, kernel_id, delta_below = "fp32", torch.float32, 0, 0.10


class Bf16(ValueFormat):
    """bf16 values (rounded to nearest even); AMX from 4 rows of x."""

    name, dtype, kernel_id, delta_below, amx_min_batch = "bf16", torch.bfloat16, 1, 0.05, 4
    dense_bf16 = True


class Int8(ValueFormat):
    """Symmetric per-row int8: ``W[r, c] = q * scales[r]``, ``scales[r] = max|W[r]| / 127`` unless given.

    The only format the W8A8 kernels (int8 activations) run; AMX from 3 rows of x."""

    name, dtype, kernel_id, delta_below, amx_min_batch = "int8", torch.int8, 2, 0.02, 3
    int_sum_max_k = 65536  # K * 127 * 255 < 2^31
    has_scales = True
    supports_int8_activations = True
    dense_bf16 = True  # codes exact in bf16; the row scale rounds once

    def encode(self, w: torch.Tensor, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q = round(w / s) per row; given scales (a quantized model's, e.g. GPTQ's, where a row's largest
        |q| may be below 127) are kept as they are, so a weight already on the grid q * s gets back its q."""
        if scales is None:
            amax = w.abs().amax(dim=1)
            scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        else:
            scales = _row_scales(scales, w.shape[0])
        q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        return q, scales.float()

    def decode(self, codes: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
        return codes.float() * scales[rows]

    def row_sums(self, values: torch.Tensor, rowptr: torch.Tensor) -> torch.Tensor:
        m = rowptr.numel() - 1
        rows = torch.repeat_interleave(torch.arange(m), rowptr.diff())
        nnz = int(rowptr[-1])
        return torch.zeros(m, dtype=torch.int64).index_add_(0, rows, values[:nnz].long()).int()


class Fp16(ValueFormat):
    """IEEE half values (round to nearest even), decoded with vcvtph2ps (AVX-512 / F16C) or portable C.

    More mantissa than bf16 (11 bits vs 8) for weights within +-65504; larger weights are refused."""

    name, dtype, kernel_id, delta_below = "fp16", torch.float16, 3, 0.05

    def encode(self, w: torch.Tensor, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        big = w.abs().max() if w.numel() else torch.tensor(0.0)
        if bool(big > FP16_MAX):  # would become inf (NaN stays NaN, as in the other float formats)
            raise ConfigError(f"fp16 values hold |w| <= {FP16_MAX:g}, got a weight of {float(big):g}; use bf16")
        return super().encode(w, scales)


class Int4(ValueFormat):
    """Symmetric int4 with a scale per row and group of 128 columns: ``W[r, c] = (u - 8) * s[r, c // 128]``
    for the stored 4-bit code u in [1, 15], ``s = max|W[r, group]| / 7``; two codes per byte, the first in
    the low nibble. Groups count the padded columns (64 per mask word, so a group is two mask words);
    scales are stored flat, row by row (``rows * ceil(ceil(K / 64) / 2)``).

    At 70% sparsity a weight costs 0.125 (mask) + 0.15 (values) + 0.01 (scales) bytes: a third less
    than int8 values (0.425). Batch 1 runs the AVX-512 VNNI kernel (x in 16 bits, as int8 weights);
    batch > 1 runs it token by token on AVX-512, elsewhere the portable kernel (csrc/kern_int4.c)."""

    name, dtype, kernel_id, value_bits, delta_below = "int4", torch.uint8, 4, 4, 0.0
    group_columns = 128
    indexes = ("bitmask",)  # the delta kernel has no group scales
    has_scales = True
    dense_bf16 = True

    def stored_len(self, nnz: int) -> int:
        return (nnz + 1) // 2

    def groups(self, cols: int) -> int:
        """Scale groups per row of a weight with ``cols`` inputs."""
        return ((cols + 63) // 64 + 1) // 2

    def scale_count(self, rows: int, cols: int) -> int:
        return rows * self.groups(cols)

    def encode(self, w: torch.Tensor, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Round to nearest on each group's own scale (max |w| / 7; an all-zero group gets scale 1), or on
        given scales ((M, groups) or flat, e.g. GPTQ's from `sparseft.quant.gptq_quantize_groups`), so that
        a weight already on the grid q * s gets back its q."""
        m, k = w.shape
        g = self.groups(k)
        grouped = torch.zeros(m, g * self.group_columns)
        grouped[:, :k] = w
        grouped = grouped.view(m, g, self.group_columns)
        if scales is None:
            amax = grouped.abs().amax(dim=2)
            s = torch.where(amax > 0, amax / 7.0, torch.ones_like(amax))
        else:
            s = _group_scales(scales, m, g)
        q = torch.round(grouped / s[:, :, None]).clamp_(-7, 7).view(m, -1)[:, :k]
        return (q + 8).to(torch.uint8), s.reshape(-1).float()

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        c = codes.to(torch.uint8)
        if c.numel() % 2:
            c = torch.cat([c, torch.zeros(1, dtype=torch.uint8)])
        return torch.cat([c[0::2] | (c[1::2] << 4), torch.zeros(self.pad_len, dtype=torch.uint8)])

    def unpack(self, values: torch.Tensor, nnz: int) -> torch.Tensor:
        b = values[: self.stored_len(nnz)]
        return torch.stack([b & 15, b >> 4], dim=1).reshape(-1)[:nnz]

    def decode(self, codes: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
        group = rows * self.groups(shape[1]) + torch.div(cols, self.group_columns, rounding_mode="floor")
        return (codes.float() - 8.0) * scales[group]


_REGISTRY: dict[str, ValueFormat] = {}


def register_format(fmt: ValueFormat) -> ValueFormat:
    """Add a format under ``fmt.name``; its kernel id must be new. Returns it (usable as a decorator
    target: ``register_format(MyFormat())``)."""
    if fmt.name in _REGISTRY:
        raise ConfigError(f"value format {fmt.name!r} is registered already")
    if any(f.kernel_id == fmt.kernel_id for f in _REGISTRY.values()):
        raise ConfigError(f"kernel id {fmt.kernel_id} of {fmt.name!r} is taken")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get_format(name: str | ValueFormat) -> ValueFormat:
    """The registered format ``name`` (a ValueFormat is returned as is); ConfigError if unknown."""
    if isinstance(name, ValueFormat):
        return name
    fmt = _REGISTRY.get(name)
    if fmt is None:
        raise ConfigError(f"unknown weight format {name!r}; expected one of {', '.join(_REGISTRY)}")
    return fmt


def format_names() -> tuple[str, ...]:
    """Names of the registered formats, in registration order."""
    return tuple(_REGISTRY)


def check_kernel_table(table: Sequence[tuple[str, int, int, bool]]) -> None:
    """Raise ImportError unless the C kernels' table ((name, id, bits, has_scales), ...) and the registry
    describe the same formats: an id of one side never silently means another format on the other."""
    c_side = {name: (kid, size, bool(scales)) for name, kid, size, scales in table}
    py_side = {f.name: (f.kernel_id, f.bits, f.has_scales) for f in _REGISTRY.values()}
    if c_side != py_side:
        raise ImportError(
            f"the C kernels' formats {c_side} do not match the registry {py_side}: rebuild the extension "
            "(python setup.py build_ext --inplace) or fix the format ids"
        )


def _positive(s: torch.Tensor, what: str) -> torch.Tensor:
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise ConfigError(f"{what} scales must be positive and finite")
    return s.contiguous()


def _group_scales(scales: torch.Tensor, m: int, groups: int) -> torch.Tensor:
    """(m, groups) fp32 int4 scales from (m, groups) or flat ones."""
    s = scales.detach().to("cpu", torch.float32).reshape(-1)
    if s.numel() != m * groups:
        raise ConfigError(f"expected {m} x {groups} int4 group scales (a row and 128 columns each), got {s.numel()}")
    return _positive(s, "int4").view(m, groups)


def _row_scales(scales: torch.Tensor, m: int) -> torch.Tensor:
    """(m,) fp32 scales from per-row ((m,) or (m, 1)) or per-tensor (one element) scales."""
    s = scales.detach().to("cpu", torch.float32).reshape(-1)
    if s.numel() == 1:
        s = s.expand(m)
    if s.numel() != m:
        raise ConfigError(f"expected {m} per-row int8 scales or one per-tensor scale, got {s.numel()}")
    return _positive(s, "int8")


for _fmt in (Fp32(), Bf16(), Int8(), Fp16(), Int4()):
    register_format(_fmt)

FORMATS = format_names()  # the built-in formats; format_names() also lists ones registered later
