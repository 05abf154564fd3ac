"""Compressed checkpoints: safetensors (no pickle) + a JSON record of each sparse layer's format.

    >>> save_compressed(model, "out/smollm2-70-int8")     # model converted with sparsify_model
    >>> model = load_compressed("out/smollm2-70-int8")    # SparseLinear layers, ready to generate()

Folder layout: ``config.json`` (the HF config), ``model.safetensors`` (every tensor of the state dict;
sparse layers as ``NAME.mask/.values/.rowptr/.scales[/.bias][/.input_scale]``), ``sparseft.json`` (format
version, per layer fmt/index/shape/nnz/activation mode, tied-tensor aliases, and the byte size + sha256 of ``model.safetensors``). The folder
is written under a temporary name and moved into place with os.replace, so a crash leaves no half
checkpoint; loading checks size, checksum and every tensor's shape and dtype.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparseft.atomic import atomic_folder
from sparseft.errors import CheckpointError, ConfigError
from sparseft.runtime.format import MAX_ABS_WEIGHT, tensor_sizes
from sparseft.runtime.formats import get_format
from sparseft.runtime.kernels import ACT_MODES
from sparseft.runtime.linear import SparseLinear

META_FILE = "sparseft.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "sparseft-compressed"
VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one copy of tensors that share storage (tied weights); return (tensors, alias -> kept name)."""
    kept: dict[tuple[int, tuple[int, ...]], str] = {}
    tensors, aliases = {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape)) if t.numel() else (id(t), tuple(t.shape))
        if key in kept:
            aliases[name] = kept[key]
        else:
            kept[key] = name
            tensors[name] = t.detach().cpu().contiguous()
    return tensors, aliases


def _layer_record(module: SparseLinear) -> dict[str, Any]:
    return {
        "fmt": module.fmt,
        "index": module.index,
        "shape": [module.out_features, module.in_features],
        "nnz": module.compressed().nnz,
        "bias": module.bias is not None,
        "act": module.act,
    }


def save_compressed(
    model: nn.Module, out_dir: str | Path, *, tokenizer: Any = None, overwrite: bool | None = None
) -> Path:
    """Write ``model`` (with SparseLinear layers) to ``out_dir``, with its config, generation config and
    ``tokenizer`` (or processor) when given, so the folder loads and generates on its own; an existing
    sparseft output is replaced atomically (anything else only with ``overwrite=True``)."""
    tensors, aliases = _dedupe(model.state_dict())
    layers = {n: _layer_record(m) for n, m in model.named_modules() if isinstance(m, SparseLinear)}
    with atomic_folder(out_dir, overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if getattr(model, "config", None) is not None:
            model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = {
            "format": FORMAT_NAME,
            "version": VERSION,
            "architecture": type(model).__name__,
            "layers": layers,
            "aliases": aliases,
            "files": {WEIGHTS_FILE: {"bytes": (tmp / WEIGHTS_FILE).stat().st_size, "sha256": _sha256(tmp / WEIGHTS_FILE)}},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return Path(out_dir)


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and check ``sparseft.json`` and the weights file it describes (size and sha256)."""
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{folder} is not a sparseft compressed checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is not valid JSON ({err}); the checkpoint is damaged") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or meta.get("version") != VERSION:
        got = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: not a {FORMAT_NAME} v{VERSION} record (got {got})")
    _check_meta_shape(meta, meta_path)
    for fname, rec in meta["files"].items():
        f = folder / fname
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        size = f.stat().st_size
        if size != rec["bytes"]:
            raise CheckpointError(f"{f} is truncated or altered: {size} bytes, expected {rec['bytes']}")
        if _sha256(f) != rec["sha256"]:
            raise CheckpointError(
                f"{f} is altered: its sha256 does not match the one recorded in {META_FILE}"
            )
    return meta


def _check_meta_shape(meta: dict[str, Any], where: Path) -> None:
    """The record's fields have the types the loader relies on; the weights file is covered by a checksum."""
    files, layers, aliases = meta.get("files"), meta.get("layers"), meta.get("aliases", {})
    if not isinstance(files, dict) or not isinstance(files.get(WEIGHTS_FILE), dict):
        raise CheckpointError(f"{where}: 'files' must record the size and sha256 of {WEIGHTS_FILE}")
    if not all(isinstance(r, dict) and isinstance(r.get("bytes"), int) and isinstance(r.get("sha256"), str)
               for r in files.values()):
        raise CheckpointError(f"{where}: every entry of 'files' needs an integer 'bytes' and a 'sha256'")
    if not isinstance(layers, dict) or not isinstance(aliases, dict):
        raise CheckpointError(f"{where}: 'layers' and 'aliases' must be objects")
    for name, rec in layers.items():
        shape, nnz = rec.get("shape") if isinstance(rec, dict) else None, rec.get("nnz") if isinstance(rec, dict) else None
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)
                and isinstance(nnz, int) and 0 <= nnz <= shape[0] * shape[1] * 2):
            raise CheckpointError(f"layer {name}: 'shape' must be two positive integers and 'nnz' a count within it")


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint tensors do not match the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, t in state.items():
        want = expected[name]
        if t.shape != want.shape or t.dtype != want.dtype:
            raise CheckpointError(
                f"tensor {name}: stored {t.dtype} {tuple(t.shape)}, expected {want.dtype} {tuple(want.shape)}"
            )


def _record_format(name: str, rec: dict[str, Any]) -> str:
    """The layer record's value format, checked against the registry (and its activation mode)."""
    try:
        fmt = get_format(rec.get("fmt"))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"layer {name}: {err} (written by a newer sparseft?)") from err
    if rec.get("act", "none") not in ACT_MODES:
        raise CheckpointError(f"layer {name}: unknown activation mode {rec.get('act')!r}")
    return fmt.name


def _header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """dtype name and shape of every tensor in a safetensors file, read from its header (no data)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (str(f.get_slice(k).get_dtype()), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types on a damaged header
        raise CheckpointError(f"{path} cannot be read: {err}") from err


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8",
                       torch.uint8: "U8", torch.int64: "I64"}


def _check_layer_tensors(name: str, rec: dict[str, Any], header: dict, probe: nn.Module) -> str:
    """The layer's record against the model the config builds and the tensors the file holds; its format."""
    from sparseft.models.layers import out_in_shape
    from sparseft.models.walk import is_prunable

    fmt = _record_format(name, rec)
    try:
        module = probe.get_submodule(name)
    except AttributeError:
        raise CheckpointError(f"layer {name}: the model's config has no such layer") from None
    if not is_prunable(module) or list(out_in_shape(module)) != rec["shape"]:
        raise CheckpointError(f"layer {name}: recorded shape {rec['shape']} is not the config's layer")
    index = rec.get("index", "bitmask")
    if index not in ("bitmask", "delta"):
        raise CheckpointError(f"layer {name}: unknown index {index!r}")
    if index not in get_format(fmt).indexes:
        raise CheckpointError(f"layer {name}: {fmt} values are stored with the {' / '.join(get_format(fmt).indexes)} "
                              f"index only, the record says {index!r}")
    for part, (dtype, shape) in tensor_sizes(*rec["shape"], rec["nnz"], fmt, index).items():
        stored = header.get(f"{name}.{part}")
        if stored != (_SAFETENSORS_DTYPES[dtype], shape):
            raise CheckpointError(f"layer {name}: {part} should be {dtype} {shape} for its record, the file holds {stored}")
    return fmt


def _dense_bytes(probe: nn.Module, sparse: set[str]) -> int:
    """Bytes of the parameters and buffers the config declares outside the sparse layers (in fp32)."""
    total = 0
    for name, t in [*probe.named_parameters(), *probe.named_buffers()]:
        if name.rsplit(".", 1)[0] not in sparse:
            total += t.numel() * 4
    return total


def load_compressed(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a folder written by ``save_compressed`` as its architecture's HF class (causal LM, seq2seq,
    speech seq2seq) with SparseLinear layers and its generation config.

    The folder is untrusted: before anything is allocated, its record is checked against the model its
    config builds (on the meta device) and against the tensor sizes in the weights file's header, so no
    size in a crafted file can make the loader allocate more than the file holds; after loading, every
    sparse layer's contents are checked (`CompressedWeight.validate_contents`) before a kernel reads them.
    Raises CheckpointError naming the layer and the check when anything does not fit."""
    from transformers import AutoConfig

    from sparseft.models.loading import model_class_for

    folder = Path(path)
    meta = read_meta(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            probe = model_class_for(config).from_config(config)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{folder}: config.json does not describe a model this loader builds: {err}") from err
    header = _header(folder / WEIGHTS_FILE)
    formats = {name: _check_layer_tensors(name, rec, header, probe) for name, rec in meta["layers"].items()}
    file_bytes = (folder / WEIGHTS_FILE).stat().st_size
    if _dense_bytes(probe, set(formats)) > 2 * file_bytes + (1 << 20):  # fp32 of bf16/fp16-stored weights
        raise CheckpointError(f"{folder}: config.json declares far more weights than {WEIGHTS_FILE} holds")
    del probe
    model = model_class_for(config).from_config(config, dtype=dtype)
    _load_generation_config(model, folder)
    for name, rec in meta["layers"].items():
        shell = SparseLinear.empty(
            rec["shape"][0], rec["shape"][1], rec["nnz"], formats[name], bool(rec.get("bias")),
            rec.get("index", "bitmask"), rec.get("act", "none"),
        )  # fmt: skip
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, shell)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types on a damaged header
        raise CheckpointError(f"{folder / WEIGHTS_FILE} cannot be read: {err}") from err
    for alias, target in meta["aliases"].items():
        if target not in state:
            raise CheckpointError(f"alias {alias} points to {target}, which is not in the checkpoint")
        state[alias] = state[target]
    expected = model.state_dict()
    _cast_dense(state, expected, set(meta["layers"]))
    _check_tensors(state, expected)
    _check_finite(state)
    try:
        model.load_state_dict(state, strict=True)  # SparseLinear validates its tensors (sizes, index, values)
    except ConfigError as err:
        raise CheckpointError(f"{folder}: a sparse layer's tensors are inconsistent: {err}") from err
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def _cast_dense(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], sparse: set[str]) -> None:
    """The dense tensors (embeddings, norms, biases, ...) are stored in fp32; a model loaded in another
    float dtype (``load_compressed(path, torch.bfloat16)``) takes them in its own. The sparse layers'
    tensors keep exactly the dtypes of their format (checked against the file header already)."""
    for name, t in state.items():
        want = expected.get(name)
        if want is None or name.rpartition(".")[0] in sparse or t.dtype == want.dtype:
            continue
        if t.dtype.is_floating_point and want.dtype.is_floating_point:
            state[name] = t.to(want.dtype)


def _check_finite(state: dict[str, torch.Tensor]) -> None:
    for name, t in state.items():
        if t.dtype.is_floating_point and not bool((t.abs() <= MAX_ABS_WEIGHT).all()):
            raise CheckpointError(f"tensor {name} holds NaN, infinity or magnitudes beyond {MAX_ABS_WEIGHT:g}")


def _load_generation_config(model: nn.Module, folder: Path) -> None:
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
