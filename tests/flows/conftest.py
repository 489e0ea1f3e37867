"""Flows run for real: a temporary Prefect server (SQLite) for the whole session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness: None) -> None:
    """Every flow test runs against the session's temporary Prefect server."""


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOSEG_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "flow-test-key")
    monkeypatch.delenv("MAMMOSEG_STORE_URL", raising=False)
