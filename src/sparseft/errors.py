"""User-facing errors: each message says what was wrong and what is accepted.

The CLI prints these without a traceback; library users can catch `SparseftError`.
"""


class SparseftError(Exception):
    """Base class for errors caused by user input (bad model, bad setting, bad file)."""


class ConfigError(SparseftError, ValueError):
    """A setting is outside what is accepted (e.g. sparsity outside [0, 1))."""


class ModelError(SparseftError):
    """A model cannot be loaded or has nothing to prune."""


class CheckpointError(SparseftError):
    """A file is missing, truncated or altered."""
