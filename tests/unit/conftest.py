"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from mammoseg import catalog as cat


@pytest.fixture()
def fresh_catalog_cache():
    """The run catalog's process-wide read cache, empty before and after the test."""
    cat.CACHE.clear()
    yield
    cat.CACHE.clear()
