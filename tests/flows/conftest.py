"""Flows run for real: a temporary Prefect server (SQLite) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOSEG_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "flow-test-key")
    monkeypatch.delenv("MAMMOSEG_STORE_URL", raising=False)
