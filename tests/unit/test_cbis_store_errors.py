"""CBIS-DDSM ingest when the store fails mid-way: an outage is not bad data.

A header that cannot be read because the *content* is bad (not a DICOM, truncated, deleted since
the listing) makes a DICOM "unknown"; an error of the store itself (connection refused, timeout,
server error, OSError) must propagate, so the ingest task retries and then fails loudly, instead
of quarantining good cases as "no ROI mask".
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from mammoseg.adapters.cbis_ddsm import load_cbis
from mammoseg.adapters.registry import load_dataset
from mammoseg.storage import LocalStore, ObjectInfo, ObjectNotFound
from mammoseg.synth import CbisSynthParams, SynthSummary, generate_cbis

KEY = "test-key"
#: the four CSVs are read first; the outage starts among the DICOM headers
OK_READS = 6


class FlakyStore(LocalStore):
    """A real local store behind a connection that breaks: after ``ok_reads`` object reads,
    every read raises ``error()`` (listing still works, as when the network drops mid-ingest)."""

    def __init__(self, root: Path, ok_reads: int, error: Callable[[], BaseException]) -> None:
        super().__init__(root)
        self.ok_reads, self.error = ok_reads, error
        self.reads = 0
        self._lock = threading.Lock()

    def _tick(self) -> None:
        with self._lock:
            self.reads += 1
            if self.reads > self.ok_reads:
                raise self.error()

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        self._tick()
        return super()._open(key)

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        self._tick()
        return super()._read_prefix(key, nbytes)


@pytest.fixture(scope="module")
def cbis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """A synthetic CBIS-DDSM-shaped dataset without defects; returns its root folder."""
    root = tmp_path_factory.mktemp("cbis")
    summary = generate_cbis(LocalStore(root), CbisSynthParams(n_patients=5, height=96, width=64, seed=7, prefix="cbis"))
    return root / "cbis", summary


NEVER = 10**9


def _unused() -> BaseException:
    return AssertionError("unused")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


OUTAGES: dict[str, Callable[[], BaseException]] = {
    "connection-reset": lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    "endpoint-down": lambda: EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/bucket/key"),
    "read-timeout": lambda: ReadTimeoutError(endpoint_url="http://127.0.0.1:9000/bucket/key"),
    "timeout": lambda: TimeoutError("timed out"),
    "s3-500": lambda: _client_error("InternalError", 500),
    "s3-slowdown": lambda: _client_error("SlowDown", 503),
    "s3-access-denied": lambda: _client_error("AccessDenied", 403),
    "disk-io-error": lambda: OSError(errno.EIO, "Input/output error"),
}


def test_the_healthy_store_ingests_every_case(cbis: tuple[Path, SynthSummary]) -> None:
    root, summary = cbis
    result = load_cbis(FlakyStore(root, NEVER, _unused), pseudonym_key=KEY)
    assert result.rejects == []
    assert result.lesions["case_id"].nunique() == summary.n_images


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_a_store_outage_mid_ingest_raises_instead_of_quarantining(
    cbis: tuple[Path, SynthSummary], outage: str
) -> None:
    root, _ = cbis
    flaky = FlakyStore(root, OK_READS, OUTAGES[outage])
    with pytest.raises(type(OUTAGES[outage]())):
        load_dataset("cbis-ddsm", flaky, pseudonym_key=KEY)
    assert flaky.reads > OK_READS  # it failed among the DICOM reads, not before


def test_bad_content_is_still_unknown_not_an_abort(cbis: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    """A mask that is not a DICOM, or that vanished since the listing, is the case's problem:
    that case is rejected with a reason naming no folder or header text; the rest is kept."""
    root, summary = cbis
    source, store = LocalStore(root), LocalStore(tmp_path)
    for info in source.list():
        store.write_bytes(info.key, source.read_bytes(info.key))
    by_case: dict[str, str] = {}  # one mask of each of two cases (lesion folder = case folder + _<n>)
    for info in store.list():
        if info.key.startswith("Mass") and info.key.endswith("000001.dcm"):
            by_case.setdefault(info.key.split("/", 1)[0].rsplit("_", 1)[0], info.key)
    masks = sorted(by_case.values())[:2]
    store.write_bytes(masks[0], b"not a DICOM at all")

    class Vanishing(FlakyStore):
        def _read_prefix(self, key: str, nbytes: int) -> bytes:
            if key == masks[1]:
                raise ObjectNotFound("gone")
            return super()._read_prefix(key, nbytes)

        def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
            if key == masks[1]:
                raise ObjectNotFound("gone")
            return super()._open(key)

    result = load_cbis(Vanishing(tmp_path, NEVER, _unused), pseudonym_key=KEY)
    assert len(result.rejects) == 2
    for r in result.rejects:
        assert "no ROI mask" in r.reason and "unreadable" in r.reason, r.reason
        assert "_P_0" not in r.reason and "images" not in r.reason  # no folder name, no header text
    assert result.lesions["case_id"].nunique() == summary.n_images - 2
