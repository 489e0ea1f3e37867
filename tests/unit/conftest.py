"""Fixtures shared by the unit tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mammoseg import catalog as cat

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def fresh_catalog_cache():
    """The run catalog's process-wide read cache, empty before and after the test."""
    cat.CACHE.clear()
    yield
    cat.CACHE.clear()


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """A loader of ``benchmarks/<name>.py`` scripts, for tests of their pure parts."""
    return _load_benchmark
