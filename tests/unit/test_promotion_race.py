"""Safe promotion (issue 8): compare-and-swap on ``models/CURRENT``, idempotent publishing and
S3 error messages without object keys.

The races are forced, not hoped for: a store that pauses right after its first read of
``CURRENT`` lets both promotions read the same champion before either writes, and an event
orders the writes. Champion 0.30, challenger A 0.90, challenger B 0.50: whatever the order, A
must end up champion. S3 runs through the moto server over HTTP (never a mocked boto3), once with
conditional writes (``If-Match`` / ``If-None-Match``, which moto honours) and once with the lease
fallback used for endpoints that ignore them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from test_publish import RecordingStore  # the store that records its writes

from mammoseg.publish import (
    CURRENT_KEY,
    GateDecision,
    PublishError,
    list_versions,
    make_version_id,
    promote_if_better,
    publish_version,
    read_pointer,
)
from mammoseg.settings import get_settings
from mammoseg.storage import (
    LocalStore,
    LockTimeout,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    S3RequestError,
    S3Store,
    S3TransientError,
    StoreConnectionError,
    StoreError,
    UnsafeKeyError,
    describe_key,
    validate_key,
)

MANIFEST = [{"key": "preprocessed/p1/abc.npz", "etag": "0123abcd"}]
SECRET_KEY = "Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/000001.dcm"
SECRET_PARTS = ("P_00016", "Mass-Test", "000001.dcm", "DDSM-09887")


# -- stores ---------------------------------------------------------------------------------
class _PausesAfterReadingCurrent:
    """Store mixin: calls ``pause()`` once, right after the store's first read of CURRENT."""

    _pause: Callable[[], None] | None = None

    def _open(self, key: str) -> tuple[IO[bytes], ObjectInfo]:
        opened = super()._open(key)  # type: ignore[misc]
        if key == CURRENT_KEY and self._pause is not None:
            pause, self._pause = self._pause, None
            pause()
        return opened


class PausingLocalStore(_PausesAfterReadingCurrent, LocalStore):
    def __init__(self, root: Path, pause: Callable[[], None] | None = None) -> None:
        super().__init__(root)
        self._pause = pause


class PausingS3Store(_PausesAfterReadingCurrent, S3Store):
    def __init__(self, *args: object, pause: Callable[[], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pause = pause


StoreFactory = Callable[[Callable[[], None] | None], ObjectStore]


@pytest.fixture(params=["local", "s3-conditional", "s3-lease"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory of store handles on one shared location (one handle per racing promotion)."""
    if request.param == "local":
        root = tmp_path / "store"
        return lambda pause=None: PausingLocalStore(root, pause)
    bucket = request.getfixturevalue("s3_bucket")
    settings = get_settings()
    conditional = request.param == "s3-conditional"

    def factory(pause: Callable[[], None] | None = None) -> ObjectStore:
        store = PausingS3Store(
            bucket, "root", settings=settings, conditional_writes=conditional, pause=pause
        )
        store.lease_settle_s = 0.05
        store.lease_ttl_s = 20.0
        store.lease_timeout_s = 30.0
        return store

    return factory


def _publish(store: ObjectStore, tmp_path: Path, name: str, score: float) -> str:
    model = tmp_path / f"{name}.keras"
    model.write_bytes(f"weights of {name}".encode())
    return publish_version(
        store,
        model_file=model,
        training_config={},
        data_manifest=MANIFEST,
        metrics={"dice_mean": score},
        model_card_md=f"# {name}\n",
        version=name,
    ).version


def _run_threads(targets: dict[str, Callable[[], object]]) -> dict[str, object]:
    results: dict[str, object] = {}
    errors: list[str] = []

    def run(name: str, fn: Callable[[], object]) -> None:
        try:
            results[name] = fn()
        except BaseException:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(n, f), daemon=True) for n, f in targets.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a promotion hung"
    assert not errors, "\n".join(errors)
    return results


# -- the primitive --------------------------------------------------------------------------
def test_compare_and_swap_semantics(make_store: StoreFactory) -> None:
    store = make_store(None)
    created = store.compare_and_swap("models/CURRENT", None, b"one", "application/json")
    assert store.read_bytes("models/CURRENT") == b"one"
    assert created.etag == store.head("models/CURRENT").etag == hashlib.md5(b"one").hexdigest()
    with pytest.raises(PreconditionFailed, match="exists already"):
        store.compare_and_swap("models/CURRENT", None, b"two")
    with pytest.raises(PreconditionFailed):
        store.compare_and_swap("models/CURRENT", "0" * 32, b"two")
    swapped = store.compare_and_swap("models/CURRENT", f'"{created.etag}"', b"two")
    assert store.read_bytes("models/CURRENT") == b"two"
    with pytest.raises(PreconditionFailed):  # the ETag we read is stale now
        store.compare_and_swap("models/CURRENT", created.etag, b"three")
    store.delete("models/CURRENT")
    with pytest.raises(PreconditionFailed, match="no longer exists"):
        store.compare_and_swap("models/CURRENT", swapped.etag, b"four")
    assert not store.exists("models/CURRENT")
    # locks and leases never show up as objects
    assert [o.key for o in store.list()] == []


def test_moto_honours_conditional_writes(s3_bucket: str) -> None:
    """What the auto-probe finds on the test endpoint: If-Match / If-None-Match are enforced."""
    store = S3Store(s3_bucket, "probe", settings=get_settings())
    assert store._conditional_writes_supported() is True
    assert [o.key for o in store.list()] == []  # the probe object is gone


# -- racing promotions ----------------------------------------------------------------------
@pytest.mark.parametrize("first", ["A", "B"])
def test_racing_promotions_keep_the_best_model(
    make_store: StoreFactory, tmp_path: Path, first: str
) -> None:
    setup = make_store(None)
    champion = _publish(setup, tmp_path, "champion", 0.30)
    a = _publish(setup, tmp_path, "A", 0.90)
    b = _publish(setup, tmp_path, "B", 0.50)
    assert promote_if_better(setup, champion).promoted

    both_read = threading.Barrier(2, timeout=60)
    first_done = threading.Event()

    def pause_first() -> None:
        both_read.wait()  # both promotions have read the old champion

    def pause_second() -> None:
        both_read.wait()
        assert first_done.wait(timeout=60)  # and write only once the other has finished

    def promote(version: str, pause: Callable[[], None]) -> GateDecision:
        try:
            return promote_if_better(make_store(pause), version)
        finally:
            if pause is pause_first:
                first_done.set()

    second = "B" if first == "A" else "A"
    pauses = {first: pause_first, second: pause_second}
    got = _run_threads({"A": lambda: promote(a, pauses["A"]), "B": lambda: promote(b, pauses["B"])})

    pointer = read_pointer(setup)
    assert pointer is not None and pointer.version == a and pointer.score == 0.90
    da, db = got["A"], got["B"]
    assert isinstance(da, GateDecision) and isinstance(db, GateDecision)
    assert da.promoted
    if first == "A":  # B lost the race, re-read the champion (A) and lost the comparison
        assert not db.promoted and "does not beat champion A" in db.reason
        assert pointer.previous == champion
    else:  # B won against the old champion; A lost the race, re-read B and beat it
        assert db.promoted and db.champion_before == champion
        assert da.champion_before == b and pointer.previous == b


def test_many_free_running_promotions_end_on_the_best(tmp_path: Path) -> None:
    root = tmp_path / "store"
    setup = LocalStore(root)
    promote_if_better(setup, _publish(setup, tmp_path, "champion", 0.30))
    scores = [0.35, 0.9, 0.5, 0.61, 0.42, 0.77, 0.31, 0.89]
    versions = {f"c{i}": _publish(setup, tmp_path, f"c{i}", s) for i, s in enumerate(scores)}
    all_read = threading.Barrier(len(versions), timeout=60)
    _run_threads(
        {
            name: (lambda v=v: promote_if_better(PausingLocalStore(root, all_read.wait), v))
            for name, v in versions.items()
        }
    )
    assert read_pointer(setup).version == "c1"


def _promote_in_child(root: Path, version: str, barrier) -> None:  # runs in a forked process
    time.sleep(random.uniform(0, 0.01))
    promote_if_better(PausingLocalStore(root, lambda: barrier.wait(60)), version)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_promotions_racing_in_separate_processes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    setup = LocalStore(root)
    promote_if_better(setup, _publish(setup, tmp_path, "champion", 0.30))
    a = _publish(setup, tmp_path, "A", 0.90)
    others = [_publish(setup, tmp_path, f"B{i}", 0.50 + i / 100) for i in range(3)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_promote_in_child, args=(root, v, barrier)) for v in [*others, a]]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert read_pointer(setup).version == a


# -- locks and leases -----------------------------------------------------------------------
def test_local_lock_waits_for_a_holder_and_times_out(tmp_path: Path) -> None:
    import fcntl

    store = LocalStore(tmp_path / "store")
    store.compare_and_swap("models/CURRENT", None, b"x")
    store.lock_timeout_s = 0.3
    lock = tmp_path / "store" / "models" / ".mammoseg-lock-CURRENT"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockTimeout):
            store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")
    finally:
        os.close(fd)
    assert store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")


def test_exclusive_create_lock_breaks_stale_locks(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store._use_flock = False  # the fallback for platforms without fcntl
    store.lock_timeout_s, store.lock_stale_s = 0.3, 5.0
    store.compare_and_swap("models/CURRENT", None, b"x")
    lock = tmp_path / "store" / "models" / ".mammoseg-lockx-CURRENT"
    assert not lock.exists()  # released
    lock.write_text("4242 0\n")  # a live holder
    with pytest.raises(LockTimeout):
        store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")
    old = time.time() - 60
    os.utime(lock, (old, old))  # its holder died a minute ago
    store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")
    assert store.read_bytes("models/CURRENT") == b"y" and not lock.exists()


def test_s3_lease_blocks_while_held_and_expires(s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "lease", settings=get_settings(), conditional_writes=False)
    store.lease_settle_s, store.lease_timeout_s = 0.05, 0.5
    store.compare_and_swap("models/CURRENT", None, b"x")
    lease = {"token": "someone-else", "expires_at": time.time() + 30}
    store.write_bytes("models/.mammoseg-lease-CURRENT", json.dumps(lease).encode())
    with pytest.raises(LockTimeout):
        store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")
    lease["expires_at"] = time.time() - 1  # its holder died
    store.write_bytes("models/.mammoseg-lease-CURRENT", json.dumps(lease).encode())
    store.compare_and_swap("models/CURRENT", store.head("models/CURRENT").etag, b"y")
    assert store.read_bytes("models/CURRENT") == b"y"
    assert [o.key for o in store.list()] == ["models/CURRENT"]  # our lease was removed


# -- idempotent publishing ------------------------------------------------------------------


def test_version_id_comes_from_the_run_id_not_the_clock(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    sha8 = hashlib.sha256(b"weights").hexdigest()[:8]
    run = "20250102T030405Z-3fa1"
    one = make_version_id(model, run_id=run, now=datetime(2025, 1, 2, tzinfo=UTC))
    two = make_version_id(model, run_id=run, now=datetime(2026, 5, 6, tzinfo=UTC))
    assert one == two == f"{run}-{sha8}"
    odd = make_version_id(model, run_id="my run/1")
    assert odd.startswith("my-run-1-") and odd.endswith(sha8)
    assert odd != make_version_id(model, run_id="my run 1")


def test_a_publish_retried_after_complete_yields_one_version(tmp_path: Path) -> None:
    """What a retry of the publish task does: same run id, same model, same files."""
    store = RecordingStore(tmp_path / "store")
    model = tmp_path / "m.keras"
    model.write_bytes(b"weights of this run")
    run = "20250102T030405Z-3fa1"

    def attempt():
        version = make_version_id(model, run_id=run)
        published = publish_version(
            store,
            model_file=model,
            training_config={"run_id": run},
            data_manifest=MANIFEST,
            metrics={"dice_mean": 0.6, "run_id": run},
            model_card_md=f"# card {version}\n",
            version=version,
        )
        return published, promote_if_better(store, published.version)

    first, d1 = attempt()
    n_writes = len(store.written)
    pointer_before = store.read_bytes(CURRENT_KEY)
    again, d2 = attempt()  # e.g. the task failed after COMPLETE and Prefect retried it
    assert again == first
    assert list_versions(store) == [first.version]
    assert len(store.written) == n_writes  # nothing rewritten, COMPLETE included
    assert d1.promoted and not d2.promoted and "already the champion" in d2.reason
    assert store.read_bytes(CURRENT_KEY) == pointer_before
    # different content under the same version id is still refused
    with pytest.raises(PublishError, match="different content.*metrics.json.*immutable"):
        publish_version(
            store, model_file=model, training_config={"run_id": run}, data_manifest=MANIFEST,
            metrics={"dice_mean": 0.7, "run_id": run}, model_card_md=f"# card {first.version}\n",
            version=first.version,
        )  # fmt: skip


def test_concurrent_publishes_of_one_version_complete_it_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    go = threading.Barrier(4, timeout=60)

    def publish():
        go.wait()
        return publish_version(
            LocalStore(root), model_file=model, training_config={}, data_manifest=MANIFEST,
            metrics={"dice_mean": 0.5}, model_card_md="# card\n", version="v1",
        )  # fmt: skip

    got = _run_threads({str(i): publish for i in range(4)})
    assert len({p.completed_at for p in got.values()}) == 1
    assert list_versions(LocalStore(root)) == ["v1"]


# -- no keys in error messages --------------------------------------------------------------
def _assert_no_key(exc: BaseException, key: str = SECRET_KEY) -> None:
    text = "".join(traceback.format_exception(exc))
    for part in (key, *SECRET_PARTS):
        assert part not in text, text
    assert describe_key(key).split("#")[1] in str(exc) or isinstance(exc, UnsafeKeyError)


def test_s3_not_found_messages_do_not_contain_the_key(s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "raw/cbis-ddsm", settings=get_settings())
    full = f"raw/cbis-ddsm/{SECRET_KEY}"
    for op in (
        lambda: store.head(SECRET_KEY),
        lambda: store.read_bytes(SECRET_KEY),
        lambda: store.read_prefix(SECRET_KEY, 4),
    ):
        with pytest.raises(ObjectNotFound) as info:
            op()
        _assert_no_key(info.value, full)
        assert "raw/…#" in str(info.value) and s3_bucket in str(info.value)


def test_s3_request_errors_do_not_contain_the_key(s3_env: str) -> None:
    store = S3Store("no-such-bucket-here", "", settings=get_settings())
    with pytest.raises(S3RequestError) as info:
        store.read_bytes(SECRET_KEY)
    assert info.value.code == "NoSuchBucket"
    _assert_no_key(info.value)
    with pytest.raises(S3RequestError) as info:  # boto3's upload error names bucket/key
        store.write_bytes(SECRET_KEY, b"x")
    assert info.value.code == "NoSuchBucket"
    _assert_no_key(info.value)
    store.conditional_writes = True  # skip the probe: the conditional write itself fails
    with pytest.raises(StoreError) as info:
        store.compare_and_swap(SECRET_KEY, None, b"x")
    _assert_no_key(info.value)


def test_s3_connection_errors_do_not_contain_the_key_and_stay_retryable() -> None:
    import boto3
    from botocore.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=2, read_timeout=2),
    )  # fmt: skip
    store = S3Store("bucket", "", client=client)
    with pytest.raises(StoreConnectionError) as info:
        store.head(SECRET_KEY)
    assert isinstance(info.value, ConnectionError)  # tasks.retry retries ConnectionError
    _assert_no_key(info.value)


def test_s3_server_faults_stay_retryable_and_client_faults_do_not() -> None:
    from botocore.exceptions import ClientError

    from tasks.retry import _transient_errors

    def answer(code: str, status: int) -> StoreError:
        exc = ClientError(
            {"Error": {"Code": code, "Message": f"about {SECRET_KEY}"},
             "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject",
        )  # fmt: skip
        return S3Store("bucket", "raw")._translate(exc, "read", SECRET_KEY)

    for code, status in (("SlowDown", 503), ("InternalError", 500), ("Whatever", 502)):
        err = answer(code, status)
        assert isinstance(err, S3TransientError) and isinstance(err, _transient_errors())
        _assert_no_key(err, f"raw/{SECRET_KEY}")
    for code, status in (("AccessDenied", 403), ("InvalidRequest", 400)):
        err = answer(code, status)
        assert isinstance(err, S3RequestError) and not isinstance(err, _transient_errors())
        assert err.code == code and err.status == status
    assert isinstance(answer("NoSuchKey", 404), ObjectNotFound)


def test_unsafe_key_messages_do_not_quote_the_key() -> None:
    with pytest.raises(UnsafeKeyError, match="refused object key") as info:
        validate_key(f"{SECRET_KEY}/../../escape")
    _assert_no_key(info.value)
    assert describe_key("models/CURRENT").startswith("models/…#")
    assert describe_key(SECRET_KEY).startswith("…#")


def test_s3_store_errors_survive_pickling() -> None:
    import pickle

    err = S3RequestError("S3 read of …#12345678 in s3://b failed: AccessDenied (HTTP 403)")
    err.code, err.status = "AccessDenied", 403
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.code, back.status) == (str(err), "AccessDenied", 403)

