"""What the command modules share: common arguments, and turning parsed options into stage settings.

A command only parses: `settings_from(OneShotSettings, args, calib=...)` validates the options as the
stage's settings (the one schema, `sparseft.settings`), naming a bad option by its flag.

    >>> settings = settings_from(PruneSettings, args, sparsity=args.sparsity, nm=args.nm)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sparseft.errors import ConfigError
from sparseft.settings import format_errors
from sparseft.stages import StageIO

S = TypeVar("S", bound=BaseModel)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model to read, its dtype and the remote-code switch (off unless asked)."""
    parser.add_argument(
        "model", help="packaged name (smollm2-135m, whisper-tiny.en), HF model folder, .gguf file, or hub id"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weight dtype to load in")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the hub (off unless asked)"
    )


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """--target/--ignore regexes that choose the layers."""
    parser.add_argument(
        "--target", action="append", metavar="REGEX",
        help="select layers whose name matches (repeatable); default: every Linear inside transformer blocks",
    )  # fmt: skip
    parser.add_argument("--ignore", action="append", metavar="REGEX", help="skip layers whose name matches (repeatable)")


def add_calibration_arguments(parser: argparse.ArgumentParser, nsamples: int, seqlen: int, batch: int,
                              by_kind: bool = False) -> None:
    """--calib and its sizes. `by_kind`: the defaults given are a text model's; left out, an option takes the
    model kind's default (speech: 32 clips of espeak, 4 per batch; see sparseft.stages.tasks)."""
    from sparseft.data.sources import describe_sources

    other = "; speech models: espeak, 32 clips, 4 per batch" if by_kind else ""
    parser.add_argument("--calib", nargs="+", metavar="SOURCE",
                        help=f"calibration data (its calibration split): {describe_sources()}; or files or folders "
                             "(.txt/.jsonl texts, .tsv/.jsonl text pairs, audio manifests)" + other)  # fmt: skip
    parser.add_argument("--nsamples", type=int, default=None if by_kind else nsamples,
                        help=f"calibration windows, pairs or clips (default {nsamples})")
    parser.add_argument("--seqlen", type=int, default=None if by_kind else seqlen,
                        help=f"tokens per calibration window, or most label tokens (default {seqlen})")
    parser.add_argument("--batch-size", type=int, default=None if by_kind else batch,
                        help=f"windows per forward pass (default {batch})")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling the calibration windows")


def add_output_arguments(parser: argparse.ArgumentParser, what: str = "output folder") -> None:
    """--out and --overwrite: outputs are written atomically and replace only what sparseft wrote."""
    parser.add_argument("--out", required=True, help=f"{what}: written to a temporary sibling, then moved into "
                        "place; an existing folder is replaced only if sparseft wrote it (or it is empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even if it is a file or a folder sparseft did not write")


def calibration_from(args: argparse.Namespace, default_source: list[str] | None, always: bool = False) -> dict | None:
    """The calibration options as settings values; None without sources (unless `always`: then the
    stage picks the sources by the model's kind)."""
    sources = args.calib or default_source
    if sources is None and not always:
        return None
    given = {"source": sources, "nsamples": args.nsamples, "seqlen": args.seqlen, "batch_size": args.batch_size,
             "seed": args.seed}
    return {k: v for k, v in given.items() if v is not None}  # left out: the stage's defaults


def settings_from(cls: type[S], flags: dict[str, str] | None = None, **values: Any) -> S:
    """`cls(**values)` (None values dropped, so the schema's defaults apply), or a ConfigError whose
    lines name the bad options as flags (`--batch-size`; `flags` maps field paths whose option is named
    otherwise, e.g. {"learning_rate": "--lr"}), not as field paths."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        names = {path: "--" + path.replace("_", "-").split(".")[-1] for path in _paths(values)} | (flags or {})
        raise ConfigError("invalid options:\n" + format_errors(err, names, schema=cls)) from None


def _paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        paths.append(prefix + key)
        if isinstance(value, dict):
            paths += _paths(value, prefix + key + ".")
    return paths


def stage_io(args: argparse.Namespace, output: str | Path | None, **extra: Any) -> StageIO:
    """Where the command's stage reads (`args.model`) and writes (`output`)."""
    return StageIO(str(args.model), Path(output) if output is not None else None, dtype=getattr(args, "dtype", "float32"),
                   trust_remote_code=getattr(args, "trust_remote_code", False),
                   overwrite=True if getattr(args, "overwrite", False) else None, **extra)


def print_summary(record: dict, keys: tuple[str, ...]) -> None:
    """The last line a command prints: one JSON object with the record's main results (for scripts)."""
    print(json.dumps({k: record.get(k) for k in keys}, default=str))
