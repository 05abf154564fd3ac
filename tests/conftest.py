"""Shared fixtures. Offline by default: nothing in the tests may reach a model hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny_models import TINY_FAMILIES, build_tiny_model  # noqa: E402


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request):
    return request.param, build_tiny_model(request.param)
