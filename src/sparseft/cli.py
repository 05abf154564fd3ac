"""The `sparseft` command line.

Each subcommand lives in its own module under `sparseft.commands` and exposes
`register(subparsers) -> None`, which adds a parser whose `func` default runs the command. A command
only parses its options into the stage's settings and calls the stage (`sparseft.stages`).

    sparseft --help
    sparseft prune smollm2-135m --sparsity 0.5 --out runs/smollm2-50
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from sparseft import __version__, commands
from sparseft.errors import SparseftError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparseft",
        description=(
            "Make transformer models sparse (50-90% zeros, optionally INT8) without losing accuracy, "
            "and run them faster on CPUs. Run `sparseft COMMAND --help` for each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sparseft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared argument helpers, not a command
            continue
        module = importlib.import_module(f"sparseft.commands.{info.name}")
        module.register(subparsers)
    return parser


def _install_logging(verbose: bool) -> list[tuple[logging.Logger, logging.Handler]]:
    """Log lines to stderr and the stages' result tables (logger `sparseft.report`) to stdout as plain
    text, on the streams of this call; returns the handlers, which `main` removes when it returns, so a
    later caller (another command in the same process, a test) never writes to a stream closed since."""
    root, report = logging.getLogger(), logging.getLogger("sparseft.report")
    installed = []
    if not root.handlers:  # an application that configured logging keeps its own handlers
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        installed.append((root, handler))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    report.addHandler(handler)
    report.setLevel(logging.INFO)
    report.propagate = False
    installed.append((report, handler))
    return installed


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    handlers = _install_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except SparseftError as err:
        if args.debug:
            raise
        print(f"sparseft {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sparseft {args.command}: interrupted; outputs are complete or absent", file=sys.stderr)
        return 130
    except Exception as err:  # not the user's input, or input we failed to check: one line, not a traceback
        if args.debug:
            raise
        print(f"sparseft {args.command}: error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
