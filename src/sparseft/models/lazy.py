"""Models whose transformer blocks stay on disk: a skeleton on the meta device, filled one block at a time.

`empty_model` builds the HF model without allocating its weights (buffers such as rotary `inv_freq` are
real). `StreamedWeights` then loads the weights outside the blocks (embeddings, final norm, heads) once,
and each block only while it is used: `enter` reads it from the source safetensors, `leave` writes it
(pruned) into the output file and frees it; inside `capturing`, forward hooks load a block just before
it runs and free it right after, so a full forward (e.g. through an already pruned encoder, read back
from the output) holds one block at a time. It is the `BlockResidency` of the one-shot driver.

    >>> model = empty_model("runs/dense")                          # a save_pretrained folder
    >>> stream = StreamedWeights(model, SourceCheckpoint("runs/dense"))
    >>> with stream.writing("out/model.safetensors", "out/masks.safetensors", mask_layout):
    ...     report = oneshot(model, batches, residency=stream)
    ...     stream.write_rest(report.masks)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import Tensor, nn
from transformers import AutoConfig, GenerationConfig, PreTrainedModel

from sparseft.errors import ModelError
from sparseft.models.loading import model_class_for, parse_dtype
from sparseft.models.safetensors_writer import SafetensorsWriter
from sparseft.models.walk import Block, find_blocks

log = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class StreamingUnsupported(ModelError):
    """This model or folder cannot be read block by block (no safetensors, renamed tensors, remote code...)."""


class SourceCheckpoint:
    """Where each tensor of a safetensors folder is (one `model.safetensors`, or shards with an index).

    >>> SourceCheckpoint("runs/dense").shapes["lm_head.weight"]
    (49152, 576)
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if (self.folder / INDEX_FILE).is_file():
            weight_map = json.loads((self.folder / INDEX_FILE).read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (self.folder / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            raise StreamingUnsupported(f"{self.folder} holds neither {SINGLE_FILE} nor {INDEX_FILE}")
        self.file_of: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            with safe_open(self.folder / file, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    self.file_of[key] = self.folder / file
                    self.shapes[key] = tuple(f.get_slice(key).get_shape())

    def read(self, keys: Sequence[str], device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """The named tensors, each file opened once and closed at once (its pages leave our RSS)."""
        return read_tensors({key: self.file_of[key] for key in keys}, device)


def read_tensors(files: Mapping[str, Path], device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Tensors by name from the safetensors file given for each name."""
    out: dict[str, Tensor] = {}
    for path in dict.fromkeys(files.values()):
        with safe_open(path, framework="pt", device=str(device)) as f:
            out.update({key: f.get_tensor(key) for key, p in files.items() if p == path})
    return out


def empty_model(folder: str | Path, dtype: str | torch.dtype = "float32") -> PreTrainedModel:
    """The model of a save_pretrained `folder`, in eval mode, its parameters on the meta device (no memory).

    Tied weights are tied; buffers computed at construction (rotary frequencies) are real; the
    generation config is read from the folder as `from_pretrained` does.
    """
    folder = Path(folder)
    torch_dtype = parse_dtype(dtype)
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):
        model = model_class_for(config).from_config(config, dtype=torch_dtype)
    model.tie_weights()  # tying inside init_empty_weights re-creates the target as a separate meta tensor
    if (folder / "generation_config.json").is_file() and model.can_generate():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


@dataclass(frozen=True)
class _Slot:
    """One tensor of the state dict: every module path it sits at (tied weights share it), and where it is."""

    names: tuple[str, ...]
    key: str  # its name in the source checkpoint
    out_name: str  # its name in the written checkpoint (the one HF keeps of tied names)
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_buffer: bool
    saved: bool = True  # False for the model's `_keys_to_ignore_on_save`: loaded, never written


class StreamedWeights:
    """Block weights read from disk when the driver needs them and written out pruned (see module doc)."""

    def __init__(self, model: PreTrainedModel, source: SourceCheckpoint):
        self.model = model
        self.source = source
        self.blocks = {b.name: b for b in find_blocks(model)}
        self.slots = self._plan_slots()
        self.block_slots: dict[str, list[_Slot]] = {name: [] for name in self.blocks}
        self.resident_slots: list[_Slot] = []
        for slot in self.slots:
            owners = {_owner(n, self.blocks) for n in slot.names}
            owner = owners.pop() if len(owners) == 1 else None
            (self.block_slots[owner] if owner else self.resident_slots).append(slot)
        self._pruned: set[str] = set()  # blocks already written: read back from the output
        self._loaded: set[str] = set()
        self._weights: SafetensorsWriter | None = None
        self._masks: SafetensorsWriter | None = None

    def _plan_slots(self) -> list[_Slot]:
        model = self.model
        if model._get_dtype_plan(model.dtype) or getattr(model, "is_remote_code", lambda: False)():
            raise StreamingUnsupported(f"{type(model).__name__} keeps modules in float32 or runs remote code")
        saved = model.state_dict(keep_vars=True)
        ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or [])
        tied_targets = set(getattr(model, "all_tied_weights_keys", None) or {})
        groups: dict[int, list[tuple[str, Tensor, bool]]] = {}
        for name, tensor in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(tensor), []).append((name, tensor, False))
        for name, tensor in model.named_buffers(remove_duplicate=False):
            if name in saved:  # persistent buffers only: the others are computed, never stored
                groups.setdefault(id(tensor), []).append((name, tensor, True))
        slots, problems = [], []
        for members in groups.values():
            names = tuple(n for n, _, _ in members)
            tensor, is_buffer = members[0][1], members[0][2]
            key = next((n for n in names if n in self.source.file_of), None)
            if key is None or self.source.shapes[key] != tuple(tensor.shape):
                problems.append(names[0])
                continue
            out_name = next((n for n in names if n not in tied_targets), names[0])
            slots.append(_Slot(names, key, out_name, tuple(tensor.shape), tensor.dtype, is_buffer,
                               out_name not in ignored))
        if problems:
            raise StreamingUnsupported(
                f"{len(problems)} tensors of {type(model).__name__} are missing from {self.source.folder} under "
                f"their own names or have other shapes (e.g. {problems[:3]}); load it in memory instead"
            )
        return slots

    def weights_layout(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Name -> (dtype, shape) of every tensor the output checkpoint holds."""
        return {s.out_name: (s.dtype, s.shape) for s in self.slots if s.saved}

    @contextmanager
    def writing(self, weights_path: str | Path, masks_path: str | Path,
                mask_layout: Mapping[str, tuple[torch.dtype, tuple[int, ...]]]) -> Iterator[StreamedWeights]:
        """Open the output files and load the weights outside the blocks; the files are complete on exit."""
        with SafetensorsWriter(weights_path, self.weights_layout()) as weights, \
                SafetensorsWriter(masks_path, mask_layout) as masks:
            self._weights, self._masks = weights, masks
            self._install(self.resident_slots, self.source.read([s.key for s in self.resident_slots]))
            try:
                yield self
            finally:
                self._weights = self._masks = None

    def write_rest(self, masks: dict[str, Tensor]) -> None:
        """Write the weights outside the blocks and the masks not written with their block."""
        for slot in self.resident_slots:
            if slot.saved:
                self._weights.write(slot.out_name, self._current(slot))
        for name, mask in masks.items():
            self._masks.write(name, mask.to("cpu", torch.bool))

    # The driver's BlockResidency protocol ------------------------------------------------------------

    def enter(self, block: Block, device: torch.device | None) -> None:
        if block.name not in self._loaded:
            self._load(block.name, device or self._home())
        elif device is not None:
            block.module.to(device)

    def leave(self, block: Block, masks: dict[str, Tensor]) -> dict[str, Tensor]:
        for slot in self.block_slots[block.name]:
            if slot.saved:
                self._weights.write(slot.out_name, self._current(slot).to("cpu"))
        for name, mask in masks.items():
            self._masks.write(name, mask.to("cpu", torch.bool))
        self._pruned.add(block.name)
        self._free(block.name)
        return {}

    def release(self, block: Block) -> None:
        self._free(block.name)  # read only (e.g. OWL's statistics pass): the next enter reads it again

    @contextmanager
    def capturing(self, blocks: Sequence[Block]) -> Iterator[None]:
        """Forward hooks that load each block just before it runs and free it right after."""
        handles = []
        for block in blocks:
            handles.append(block.module.register_forward_pre_hook(self._pre_hook(block.name), prepend=True))
            handles.append(block.module.register_forward_hook(self._post_hook(block.name), prepend=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for name in list(self._loaded):  # a capture that stopped inside a block leaves it loaded
                self._free(name)

    def _pre_hook(self, name: str):
        def hook(module, args):
            for other in [b for b in self._loaded if b != name]:  # left loaded by a capture that stopped in it
                self._free(other)
            if name not in self._loaded:
                self._load(name, self._home())

        return hook

    def _post_hook(self, name: str):
        def hook(module, args, output):
            self._free(name)

        return hook

    # Plumbing ----------------------------------------------------------------------------------------

    def _home(self) -> torch.device:
        # Where the resident weights are, i.e. where a full forward of the model runs.
        return next((p.device for p in self.model.parameters() if p.device.type != "meta"), torch.device("cpu"))

    def loaded_blocks(self) -> list[str]:
        """Blocks whose weights are in memory now (tests check there is never more than one)."""
        return sorted(self._loaded)

    def _load(self, block_name: str, device: torch.device) -> None:
        slots = self.block_slots[block_name]
        rewritten = [s for s in slots if s.saved and block_name in self._pruned]  # read back pruned
        tensors = self.source.read([s.key for s in slots if s not in rewritten], device)
        if rewritten:
            out = read_tensors({s.out_name: self._weights.path for s in rewritten}, device)
            tensors.update({s.key: out[s.out_name] for s in rewritten})
        self._install(slots, tensors)
        self._loaded.add(block_name)

    def _install(self, slots: Sequence[_Slot], tensors: Mapping[str, Tensor]) -> None:
        for slot in slots:
            tensor = tensors[slot.key].to(slot.dtype)
            self._assign(slot, tensor if slot.is_buffer else nn.Parameter(tensor, requires_grad=False))

    def _free(self, block_name: str) -> None:
        for slot in self.block_slots[block_name]:
            empty = torch.empty(slot.shape, dtype=slot.dtype, device="meta")
            self._assign(slot, empty if slot.is_buffer else nn.Parameter(empty, requires_grad=False))
        self._loaded.discard(block_name)

    def _assign(self, slot: _Slot, value: Tensor) -> None:
        for name in slot.names:  # one object at every tied name, as tie_weights leaves them
            module_name, _, attr = name.rpartition(".")
            module = self.model.get_submodule(module_name)
            (module._buffers if slot.is_buffer else module._parameters)[attr] = value

    def _current(self, slot: _Slot) -> Tensor:
        module_name, _, attr = slot.names[0].rpartition(".")
        module = self.model.get_submodule(module_name)
        return (module._buffers if slot.is_buffer else module._parameters)[attr].detach()


def _owner(name: str, blocks: Mapping[str, Block]) -> str | None:
    return next((b for b in blocks if name.startswith(b + ".")), None)
