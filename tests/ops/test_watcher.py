"""The polling watcher on a local folder and on S3 (moto server over HTTP), fake emitter."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mammoseg.events.model import EventEmitError, object_event_id
from mammoseg.events.watcher import Watcher, WatcherStateError, diff_listing, state_key
from mammoseg.storage import ObjectInfo, open_store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Recorder:
    """Stands in for prefect.events.emit_event; can fail the first ``fail_first`` calls."""

    def __init__(self, fail_first: int = 0, on_call: Callable[[], None] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.on_call = on_call

    def __call__(self, event, resource, *, payload, occurred, id):
        if self.on_call:
            self.on_call()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise EventEmitError("prefect is down")
        self.calls.append({"event": event, "resource": resource, "payload": payload, "id": id})

    @property
    def keys(self) -> list[str]:
        return [c["payload"]["key"] for c in self.calls]


# --- pure diff -----------------------------------------------------------------------------
def _info(key: str, etag: str) -> ObjectInfo:
    return ObjectInfo(key=key, size=1, etag=etag, uri=f"s3://b/{key}")


def test_diff_listing_by_hand() -> None:
    seen = {"a": "1", "b": "2", "gone": "9"}
    listing = [_info("a", '"1"'), _info("b", "3"), _info("c", "4")]
    changed, current = diff_listing(seen, listing)
    assert [i.key for i in changed] == ["b", "c"]
    assert current == {"a": "1", "b": "3", "c": "4"}
    assert seen == {"a": "1", "b": "2", "gone": "9"}  # caller's mapping untouched


def test_state_key_and_bad_names() -> None:
    assert state_key("cbis-ddsm") == "watch/cbis-ddsm.json"
    for bad in ["", "../x", "A", "a/b", "-x"]:
        with pytest.raises(ValueError, match="watcher name"):
            state_key(bad)


# --- local and S3 stores, same behaviour -----------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """store_url of the raw data and of the pipeline store (for state), per backend."""
    if request.param == "local":
        return {"raw": str(tmp_path / "raw"), "pipeline": str(tmp_path / "pipeline")}
    bucket = request.getfixturevalue("s3_bucket")
    return {"raw": f"s3://{bucket}", "pipeline": f"s3://{bucket}/pipeline"}


def _watcher(where: dict[str, str], rec: Recorder, **kw: Any) -> Watcher:
    return Watcher(
        where["raw"],
        "datasets/cbis",
        name="cbis",
        state_store_url=where["pipeline"],
        emit=rec,
        **kw,
    )


def test_poll_cycle_baseline_new_unchanged_changed_deleted(where: dict[str, str]) -> None:
    raw = open_store(where["raw"])
    raw.write_bytes("datasets/cbis/P_1/a.dcm", b"first")
    raw.write_bytes("datasets/cbis-ddsm/other.dcm", b"sibling folder, not ours")
    rec = Recorder()
    w = _watcher(where, rec)
    root = raw.uri("datasets/cbis")

    assert w.poll_once(now=NOW) == []  # baseline
    assert rec.calls == []
    state = json.loads(open_store(where["pipeline"]).read_bytes("watch/cbis.json"))
    assert state["dataset_root"] == root
    assert list(state["objects"]) == ["P_1/a.dcm"]

    info_b = raw.write_bytes("datasets/cbis/P_2/b.dcm", b"new")
    got = w.poll_once(now=NOW)
    assert [i.key for i in got] == ["P_2/b.dcm"]
    assert rec.calls == [
        {
            "event": "mammoseg.object.created",
            "resource": {
                "prefect.resource.id": raw.uri("datasets/cbis/P_2/b.dcm"),
                "prefect.resource.name": "P_2/b.dcm",
                "mammoseg.dataset_root": root,
                "mammoseg.etag": info_b.etag,
                "mammoseg.size": "3",
            },
            "payload": {
                "bucket": where["raw"][5:] if where["raw"].startswith("s3://") else None,
                "key": "P_2/b.dcm",
                "etag": info_b.etag,
                "size": 3,
                "event_time": "2026-03-01T12:00:00+00:00",
            },
            "id": object_event_id(raw.uri("datasets/cbis/P_2/b.dcm"), info_b.etag),
        }
    ]

    assert w.poll_once(now=NOW) == []  # unchanged
    assert len(rec.calls) == 1

    raw.write_bytes("datasets/cbis/P_1/a.dcm", b"second version")  # new ETag
    assert [i.key for i in w.poll_once(now=NOW)] == ["P_1/a.dcm"]
    assert rec.keys == ["P_2/b.dcm", "P_1/a.dcm"]

    raw.delete("datasets/cbis/P_1/a.dcm")
    assert w.poll_once(now=NOW) == []
    raw.write_bytes("datasets/cbis/P_1/a.dcm", b"second version")  # back after deletion: new again
    assert [i.key for i in w.poll_once(now=NOW)] == ["P_1/a.dcm"]
    assert len(rec.calls) == 3


def test_state_persists_across_watcher_instances(where: dict[str, str]) -> None:
    raw = open_store(where["raw"])
    raw.write_bytes("datasets/cbis/a.dcm", b"a")
    first = Recorder()
    assert _watcher(where, first).poll_once() == []
    raw.write_bytes("datasets/cbis/b.dcm", b"b")
    assert [i.key for i in _watcher(where, first).poll_once()] == ["b.dcm"]

    second = Recorder()
    again = _watcher(where, second)
    assert again.poll_once() == []  # a fresh instance remembers a and b
    raw.write_bytes("datasets/cbis/c.dcm", b"c")
    assert [i.key for i in again.poll_once()] == ["c.dcm"]
    assert second.keys == ["c.dcm"]


def test_emit_existing_announces_everything_on_the_first_poll(where: dict[str, str]) -> None:
    raw = open_store(where["raw"])
    raw.write_bytes("datasets/cbis/a.dcm", b"a")
    raw.write_bytes("datasets/cbis/sub/b.dcm", b"b")
    rec = Recorder()
    w = _watcher(where, rec, emit_existing=True)
    assert [i.key for i in w.poll_once()] == ["a.dcm", "sub/b.dcm"]
    assert w.poll_once() == []
    assert rec.keys == ["a.dcm", "sub/b.dcm"]


def test_a_failed_emit_is_retried_on_the_next_poll(where: dict[str, str]) -> None:
    raw = open_store(where["raw"])
    rec = Recorder(fail_first=1)
    w = _watcher(where, rec)
    w.poll_once()  # baseline of an empty root
    raw.write_bytes("datasets/cbis/a.dcm", b"a")
    raw.write_bytes("datasets/cbis/b.dcm", b"b")
    with pytest.raises(EventEmitError):
        w.poll_once()
    assert rec.calls == []
    assert [i.key for i in w.poll_once()] == ["a.dcm", "b.dcm"]
    assert w.poll_once() == []


# --- local-only details ----------------------------------------------------------------------
def test_local_state_file_and_unsafe_keys(tmp_path: Path) -> None:
    raw = open_store(tmp_path / "raw")
    raw.write_bytes("ok.png", b"1")
    state = tmp_path / "state" / "watch.json"
    rec = Recorder()
    w = Watcher(str(tmp_path / "raw"), name="mias", state_file=state, emit=rec)
    w.poll_once()
    assert json.loads(state.read_text())["objects"] == {"ok.png": raw.head("ok.png").etag}
    # a file the store can list but validate_key refuses (percent-encoding) is skipped, not emitted
    (tmp_path / "raw" / "P%41.png").write_bytes(b"x")
    raw.write_bytes("new.png", b"2")
    assert [i.key for i in w.poll_once()] == ["new.png"]
    assert rec.keys == ["new.png"]


def test_state_inside_the_watched_root_is_not_announced(tmp_path: Path) -> None:
    rec = Recorder()
    w = Watcher(str(tmp_path), name="self", state_store_url=str(tmp_path), emit=rec)
    w.poll_once()
    (tmp_path / "a.png").write_bytes(b"a")
    assert [i.key for i in w.poll_once()] == ["a.png"]
    assert w.poll_once() == []  # the rewritten watch/self.json is not news
    assert rec.keys == ["a.png"]


def test_state_of_another_root_or_corrupt_state_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    Watcher(str(tmp_path / "one"), name="x", state_file=state, emit=Recorder()).poll_once()
    other = Watcher(str(tmp_path / "two"), name="x", state_file=state, emit=Recorder())
    with pytest.raises(WatcherStateError, match="belongs to"):
        other.poll_once()
    state.write_text("{not json")
    with pytest.raises(WatcherStateError, match="not JSON"):
        Watcher(str(tmp_path / "one"), name="x", state_file=state, emit=Recorder()).poll_once()


def test_exactly_one_state_location() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Watcher("/tmp/x", name="x", emit=Recorder())
    with pytest.raises(ValueError, match="exactly one"):
        Watcher(
            "/tmp/x", name="x", state_file="/tmp/s.json", state_store_url="/tmp/p", emit=Recorder()
        )


def test_run_polls_until_stopped_and_survives_a_failed_poll(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.png").write_bytes(b"a")
    stop = threading.Event()
    rec = Recorder(fail_first=1)
    rec.on_call = lambda: stop.set() if rec.fail_first == 0 else None
    w = Watcher(
        str(tmp_path / "raw"),
        name="loop",
        state_file=tmp_path / "s.json",
        emit_existing=True,
        emit=rec,
    )
    worker = threading.Thread(target=w.run, args=(0.01, stop), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert rec.keys == ["a.png"]  # failed once, then emitted on the next poll, then stopped


def test_keys_are_not_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="mammoseg")
    w = Watcher(
        str(tmp_path),
        name="log",
        state_file=tmp_path.parent / f"{tmp_path.name}.json",
        emit_existing=True,
        emit=Recorder(),
    )
    (tmp_path / "P_00042_secret.png").write_bytes(b"a")
    assert len(w.poll_once()) == 1
    assert caplog.records
    assert "P_00042" not in caplog.text


def test_from_settings_watches_the_served_training_root(tmp_path: Path) -> None:
    from mammoseg.settings import Settings

    raw = tmp_path / "raw" / "cbis"
    raw.mkdir(parents=True)
    settings = Settings(store_url=str(tmp_path / "pipeline"))
    if not hasattr(settings, "retrain_source_url"):
        pytest.skip("Settings has no retrain_source_url yet (added with `mammoseg serve`)")
    with pytest.raises(ValueError, match="MAMMOSEG_RETRAIN_SOURCE_URL"):
        Watcher.from_settings(settings, emit=Recorder())
    settings = Settings(store_url=str(tmp_path / "pipeline"), retrain_source_url=str(raw) + "/")
    rec = Recorder()
    w = Watcher.from_settings(settings, emit=rec)
    w.poll_once()
    (raw / "a.png").write_bytes(b"a")
    assert [i.key for i in w.poll_once()] == ["a.png"]
    assert rec.calls[0]["resource"]["mammoseg.dataset_root"] == raw.as_uri()
    assert (tmp_path / "pipeline" / "watch" / "retrain.json").is_file()
