"""The output projection (lm_head / proj_out) of a model: finding it and untying it from the embedding.

Stages that store the head in another form than the input embedding (int4 / int8 GPTQ in `quantize`,
packed values in `compress`) untie it first, so that the embedding lookup keeps its own full-precision
weights and a reloaded config never ties the two again.

    >>> name, head = output_projection(model)      # ('lm_head', Linear(576 -> 49152))
    >>> untie_output_projection(model)             # the head now owns a copy of its weight
"""

from __future__ import annotations

from torch import nn

from sparseft.errors import ModelError


def output_projection(model: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name, module) of the model's output projection; ModelError when it has no 2-D Linear one."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    name = next((n for n, m in model.named_modules() if m is head), None) if head is not None else None
    if name is None or not hasattr(head, "weight") or head.weight.dim() != 2:
        raise ModelError(f"{type(model).__name__} has no Linear output projection (head: {type(head).__name__})")
    return name, head


def untie_config(model: nn.Module) -> None:
    """Mark the config (and its text config) untied, so that loading the saved folder keeps two tensors."""
    for config in (model.config, getattr(model.config, "get_text_config", lambda: None)()):
        if config is not None and getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False


def untie_output_projection(model: nn.Module) -> nn.Module:
    """Give the output projection its own copy of a weight it shares with the input embedding (if it
    does) and untie the config; returns the head."""
    _, head = output_projection(model)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embed is not None and getattr(embed, "weight", None) is head.weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
    untie_config(model)
    return head
