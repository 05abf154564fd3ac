"""CLI subcommands. Each module here defines `register(subparsers)`; `sparseft.cli` discovers them."""
