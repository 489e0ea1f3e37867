"""Ingest under a store outage, as Prefect runs it: retried, then failed loudly; never quarantined.
And no ingest without a private pseudonym key."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from botocore.exceptions import EndpointConnectionError
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from mammoseg.adapters.common import AdapterResult
from mammoseg.adapters.registry import load_dataset
from mammoseg.layout import SYNTH_CBIS_PREFIX, new_run_id
from mammoseg.settings import PseudonymKeyMissing
from mammoseg.storage import LocalStore, ObjectInfo
from mammoseg.synth import CbisSynthParams, SynthSummary, generate_cbis
from tasks.retry import IO_RETRIES

#: the four CSVs are read first; the outage starts among the DICOM headers
OK_READS = 6


class OutageStore(LocalStore):
    """A local store whose reads number ``ok_reads + 1`` to ``ok_reads + failing`` raise
    ``error()``: the connection drops mid-ingest and (if ``failing`` is finite) comes back."""

    def __init__(self, root: Path, ok_reads: int, failing: float, error: Callable[[], BaseException]) -> None:
        super().__init__(root)
        self.ok_reads, self.failing, self.error = ok_reads, failing, error
        self.reads = 0
        self._lock = threading.Lock()

    def _tick(self) -> None:
        with self._lock:
            self.reads += 1
            if self.ok_reads < self.reads <= self.ok_reads + self.failing:
                raise self.error()

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        self._tick()
        return super()._open(key)

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        self._tick()
        return super()._read_prefix(key, nbytes)


ATTEMPTS: list[int] = []


@task(name="load-cbis-under-outage", **{**IO_RETRIES, "retry_delay_seconds": 0}, cache_policy=NO_CACHE)
def load_under_outage(store: LocalStore) -> AdapterResult:
    """The ingest task's adapter call with the ingest task's retry policy (no delay, for speed)."""
    ATTEMPTS.append(1)
    return load_dataset("cbis-ddsm", store, pseudonym_key="outage-test")


@flow(name="ingest-under-outage")
def ingest_under_outage(store: LocalStore) -> AdapterResult:
    return load_under_outage(store)


@pytest.fixture(scope="module")
def cbis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    root = tmp_path_factory.mktemp("cbis")
    summary = generate_cbis(LocalStore(root), CbisSynthParams(n_patients=5, height=96, width=64, seed=7, prefix="cbis"))
    return root / "cbis", summary


@pytest.mark.parametrize(
    "error",
    [
        lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        lambda: EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/bucket/key"),
    ],
    ids=["connection-reset", "endpoint-down"],
)
def test_a_short_outage_is_retried_and_no_good_case_is_quarantined(cbis, error) -> None:
    root, summary = cbis
    ATTEMPTS.clear()
    store = OutageStore(root, OK_READS, failing=1, error=error)
    result = ingest_under_outage(store)
    assert len(ATTEMPTS) == 2  # the first attempt hit the outage, the retry went through
    assert result.rejects == []
    assert result.lesions["case_id"].nunique() == summary.n_images


def test_a_lasting_outage_fails_the_run_after_the_retries(cbis) -> None:
    root, _ = cbis
    ATTEMPTS.clear()
    store = OutageStore(root, OK_READS, failing=float("inf"), error=lambda: TimeoutError("read timed out"))
    with pytest.raises(TimeoutError, match="read timed out"):
        ingest_under_outage(store)
    assert len(ATTEMPTS) == 1 + IO_RETRIES["retries"]


def test_ingest_refuses_to_run_without_a_pseudonym_key(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.ingest import ingest_flow

    store_url = str(tmp_path / "store")
    generate_cbis(LocalStore(store_url), CbisSynthParams(n_patients=1, height=64, width=48, prefix=SYNTH_CBIS_PREFIX))
    source_url = LocalStore(store_url).uri(SYNTH_CBIS_PREFIX).rstrip("/")
    monkeypatch.delenv("MAMMOSEG_PSEUDONYM_KEY")
    run_id = new_run_id()
    with pytest.raises(PseudonymKeyMissing, match="MAMMOSEG_PSEUDONYM_KEY is not set"):
        ingest_flow("cbis-ddsm", source_url, store_url, run_id)
    assert not LocalStore(store_url).exists(f"runs/{run_id}/lesions-ingest.csv")  # nothing written
