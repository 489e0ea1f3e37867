"""The event convention and the MinIO webhook bridge (Starlette TestClient, fake emitter)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.testclient import TestClient

from mammoseg.events.bridge import create_app, parse_notification
from mammoseg.events.model import (
    EVENT_NAME,
    EventEmitError,
    dataset_root_for,
    object_created_event,
    object_event_id,
    relative_key,
)
from mammoseg.storage import UnsafeKeyError

TOKEN = "s3cr3t-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Recorder:
    """Stands in for prefect.events.emit_event: records what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, event, resource, *, payload, occurred, id):
        if self.fail:
            raise EventEmitError("prefect is down")
        self.calls.append(
            {
                "event": event,
                "resource": resource,
                "payload": payload,
                "occurred": occurred,
                "id": id,
            }
        )


def minio_body(
    key: str = "cases/P_00001_LEFT_CC.dcm",
    *,
    bucket: str = "raw",
    event: str = "s3:ObjectCreated:Put",
    size: int = 488,
    etag: str = "f22d66a7d0dbbc4a7cf1122eeeb1a106",
    event_time: str = "2026-01-30T09:22:31.123Z",
) -> dict[str, Any]:
    """A MinIO webhook body as MinIO's webhook target builds it (EventName, Key, one record)."""
    return {
        "EventName": event,
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": event_time,
                "eventName": event,
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {"region": "", "sourceIPAddress": "10.0.0.5"},
                "responseElements": {"x-amz-request-id": "16E11E32397D42C4"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "minioadmin"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": key,
                        "size": size,
                        "eTag": etag,
                        "contentType": "application/dicom",
                        "userMetadata": {"content-type": "application/dicom"},
                        "sequencer": "16E11E32397D42C4",
                    },
                },
                "source": {"host": "10.0.0.5", "port": "", "userAgent": "MinIO (linux; amd64)"},
            }
        ],
    }


@pytest.fixture()
def rec() -> Recorder:
    return Recorder()


@pytest.fixture()
def client(rec: Recorder) -> TestClient:
    return TestClient(create_app(token=TOKEN, emit=rec))


# --- the convention (pure) ----------------------------------------------------------------
def test_object_created_event_builds_the_documented_triple() -> None:
    when = datetime(2026, 1, 30, 10, 22, 31, tzinfo=UTC)
    name, resource, payload = object_created_event(
        "s3://raw/cbis/cases/a.dcm",
        dataset_root="s3://raw/cbis/",
        etag='"abc123"',
        size=42,
        event_time=when,
    )
    assert name == "mammoseg.object.created" == EVENT_NAME
    assert resource == {
        "prefect.resource.id": "s3://raw/cbis/cases/a.dcm",
        "prefect.resource.name": "cases/a.dcm",
        "mammoseg.dataset_root": "s3://raw/cbis",
        "mammoseg.etag": "abc123",
        "mammoseg.size": "42",
    }
    assert payload == {
        "bucket": "raw",
        "key": "cases/a.dcm",
        "etag": "abc123",
        "size": 42,
        "event_time": "2026-01-30T10:22:31+00:00",
    }


def test_event_time_is_converted_to_utc_and_naive_means_utc() -> None:
    plus2 = datetime(2026, 1, 30, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    *_, p1 = object_created_event(
        "s3://b/k", dataset_root="s3://b", etag="e", size=0, event_time=plus2
    )
    *_, p2 = object_created_event(
        "s3://b/k", dataset_root="s3://b", etag="e", size=0, event_time=datetime(2026, 1, 30, 10, 0)
    )
    assert p1["event_time"] == p2["event_time"] == "2026-01-30T10:00:00+00:00"


def test_file_uris_are_percent_decoded_and_have_no_bucket() -> None:
    _, resource, payload = object_created_event(
        "file:///data/raw/my%20set/a%20b.png",
        dataset_root="file:///data/raw/my%20set",
        etag="e",
        size=1,
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert payload["bucket"] is None
    assert payload["key"] == resource["prefect.resource.name"] == "a b.png"


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("s3://raw/cbis/../secret", "s3://raw/cbis"),
        ("s3://raw/cbis//x.dcm", "s3://raw/cbis"),
        ("s3://raw/cbis-ddsm/x.dcm", "s3://raw/cbis"),  # sibling folder, not below the root
        ("s3://other/cbis/x.dcm", "s3://raw/cbis"),
        ("file:///d/r/%2E%2E/x", "file:///d/r"),  # '..' once decoded
    ],
)
def test_unsafe_or_outside_keys_are_refused(uri: str, root: str) -> None:
    with pytest.raises(UnsafeKeyError):
        object_created_event(
            uri, dataset_root=root, etag="e", size=1, event_time=datetime(2026, 1, 1, tzinfo=UTC)
        )


@pytest.mark.parametrize(("etag", "size"), [("", 1), ('""', 1), ("e", -1), ("e", True)])
def test_bad_etag_or_size_is_refused(etag: str, size: int) -> None:
    with pytest.raises(ValueError):
        object_created_event(
            "s3://b/k",
            dataset_root="s3://b",
            etag=etag,
            size=size,
            event_time=datetime(2026, 1, 1, tzinfo=UTC),
        )


def test_event_id_is_stable_per_object_version() -> None:
    a = object_event_id("s3://b/k", '"e1"')
    assert a == object_event_id("s3://b/k", "e1")
    assert a != object_event_id("s3://b/k", "e2")
    assert a != object_event_id("s3://b/k2", "e1")
    assert isinstance(a, uuid.UUID)


def test_dataset_root_for_takes_the_longest_containing_root() -> None:
    roots = ["s3://raw", "s3://raw/cbis/", "s3://raw/cbis-ddsm"]
    assert dataset_root_for("s3://raw/cbis/x.dcm", roots) == "s3://raw/cbis"
    assert dataset_root_for("s3://raw/cbis-ddsm/x.dcm", roots) == "s3://raw/cbis-ddsm"
    assert dataset_root_for("s3://raw/mias/x.pgm", roots) == "s3://raw"
    assert dataset_root_for("s3://rawdata/x", roots) is None


def test_relative_key_requires_a_store_url_root() -> None:
    with pytest.raises(UnsafeKeyError, match="not a store URL"):
        relative_key("s3://b/k", "")


# --- the bridge --------------------------------------------------------------------------
def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_token_is_401_and_emits_nothing(
    client: TestClient, rec: Recorder, headers: dict[str, str]
) -> None:
    r = client.post("/minio/events", json=minio_body(), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert rec.calls == []


def test_documented_minio_object_created_becomes_exactly_one_event(
    client: TestClient, rec: Recorder
) -> None:
    r = client.post("/minio/events", json=minio_body(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"emitted": 1, "ignored": 0}
    assert rec.calls == [
        {
            "event": "mammoseg.object.created",
            "resource": {
                "prefect.resource.id": "s3://raw/cases/P_00001_LEFT_CC.dcm",
                "prefect.resource.name": "cases/P_00001_LEFT_CC.dcm",
                "mammoseg.dataset_root": "s3://raw",
                "mammoseg.etag": "f22d66a7d0dbbc4a7cf1122eeeb1a106",
                "mammoseg.size": "488",
            },
            "payload": {
                "bucket": "raw",
                "key": "cases/P_00001_LEFT_CC.dcm",
                "etag": "f22d66a7d0dbbc4a7cf1122eeeb1a106",
                "size": 488,
                "event_time": "2026-01-30T09:22:31.123000+00:00",
            },
            "occurred": datetime(2026, 1, 30, 9, 22, 31, 123000, tzinfo=UTC),
            "id": object_event_id(
                "s3://raw/cases/P_00001_LEFT_CC.dcm", "f22d66a7d0dbbc4a7cf1122eeeb1a106"
            ),
        }
    ]


def test_lowercase_bearer_scheme_is_accepted(client: TestClient, rec: Recorder) -> None:
    r = client.post(
        "/minio/events", json=minio_body(), headers={"authorization": f"bearer {TOKEN}"}
    )
    assert r.status_code == 200
    assert len(rec.calls) == 1


@pytest.mark.parametrize(
    "event",
    [
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectAccessed:Get",
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:PutRetention",
    ],
)
def test_removals_accesses_and_metadata_changes_are_ignored(
    client: TestClient, rec: Recorder, event: str
) -> None:
    body = minio_body(event=event)
    if event.startswith("s3:ObjectRemoved"):  # removal records carry no size / eTag
        del body["Records"][0]["s3"]["object"]["size"]
        del body["Records"][0]["s3"]["object"]["eTag"]
    r = client.post("/minio/events", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"emitted": 0, "ignored": 1}
    assert rec.calls == []


@pytest.mark.parametrize(
    "event",
    ["s3:ObjectCreated:CompleteMultipartUpload", "s3:ObjectCreated:Copy", "ObjectCreated:Put"],
)
def test_other_content_events_and_aws_names_emit(
    client: TestClient, rec: Recorder, event: str
) -> None:
    r = client.post("/minio/events", json=minio_body(event=event), headers=AUTH)
    assert r.json() == {"emitted": 1, "ignored": 0}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json at all", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "body.Records: Field required"),
        (b'{"Records": []}', "body.Records"),
        (b'{"Records": [{"foo": 1}]}', "Records[0].eventName: Field required"),
    ],
)
def test_garbage_is_422_with_a_readable_reason(
    client: TestClient, rec: Recorder, body: bytes, needle: str
) -> None:
    r = client.post(
        "/minio/events", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert needle in r.json()["error"]
    assert rec.calls == []


def test_created_record_without_etag_or_with_bad_time_is_422(
    client: TestClient, rec: Recorder
) -> None:
    body = minio_body()
    del body["Records"][0]["s3"]["object"]["eTag"]
    r = client.post("/minio/events", json=body, headers=AUTH)
    assert r.status_code == 422
    assert "Records[0].s3.object.eTag: Field required" in r.json()["error"]

    r = client.post("/minio/events", json=minio_body(event_time="yesterday"), headers=AUTH)
    assert r.status_code == 422
    assert "Records[0].eventTime" in r.json()["error"]
    assert rec.calls == []


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("Mass-Training%2FP_00001%2F1-1.dcm", "Mass-Training/P_00001/1-1.dcm"),
        ("calc+test/a%20b.dcm", "calc test/a b.dcm"),
        ("caf%C3%A9.dcm", "caf\u00e9.dcm"),
    ],
)
def test_url_encoded_keys_are_decoded(
    client: TestClient, rec: Recorder, encoded: str, decoded: str
) -> None:
    r = client.post("/minio/events", json=minio_body(encoded), headers=AUTH)
    assert r.status_code == 200, r.text
    (call,) = rec.calls
    assert call["payload"]["key"] == decoded
    assert call["resource"]["prefect.resource.id"] == f"s3://raw/{decoded}"


@pytest.mark.parametrize(
    "key",
    ["..%2F..%2Fetc%2Fpasswd", "a/../b.dcm", "a/%2E%2E/b.dcm", "%2Fabs.dcm", "a%255Cb", "a%00b"],
)
def test_unsafe_keys_are_refused_and_not_emitted(
    client: TestClient, rec: Recorder, key: str
) -> None:
    r = client.post("/minio/events", json=minio_body(key), headers=AUTH)
    assert r.status_code == 422
    assert "refused object key" in r.json()["error"]
    assert rec.calls == []


def test_one_bad_record_means_nothing_from_that_request_is_emitted(
    client: TestClient, rec: Recorder
) -> None:
    body = minio_body("good.dcm")
    bad = copy.deepcopy(body["Records"][0])
    bad["s3"]["object"]["key"] = "..%2Fevil.dcm"
    body["Records"].append(bad)
    r = client.post("/minio/events", json=body, headers=AUTH)
    assert r.status_code == 422
    assert "Records[1]" in r.json()["error"]
    assert rec.calls == []


def test_dataset_roots_map_objects_and_ignore_the_rest(rec: Recorder) -> None:
    client = TestClient(create_app(token=TOKEN, dataset_roots=["s3://raw/cbis"], emit=rec))
    r = client.post("/minio/events", json=minio_body("cbis/P_1/a.dcm"), headers=AUTH)
    assert r.json() == {"emitted": 1, "ignored": 0}
    assert rec.calls[0]["resource"]["mammoseg.dataset_root"] == "s3://raw/cbis"
    assert rec.calls[0]["payload"]["key"] == "P_1/a.dcm"
    r = client.post("/minio/events", json=minio_body("cbis-ddsm/a.dcm"), headers=AUTH)
    assert r.json() == {"emitted": 0, "ignored": 1}
    assert len(rec.calls) == 1


def test_emit_failure_is_503_so_minio_retries() -> None:
    client = TestClient(create_app(token=TOKEN, emit=Recorder(fail=True)))
    r = client.post("/minio/events", json=minio_body(), headers=AUTH)
    assert r.status_code == 503
    assert "prefect is down" in r.json()["error"]


def test_oversized_body_is_refused(client: TestClient, rec: Recorder) -> None:
    body = minio_body()
    body["padding"] = "x" * (1024 * 1024 + 10)
    r = client.post("/minio/events", content=json.dumps(body), headers=AUTH)
    assert r.status_code == 413
    assert rec.calls == []


@pytest.mark.parametrize("token", ["", "   ", "two words"])
def test_app_refuses_an_empty_or_spaced_token(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(token=token, emit=Recorder())


def test_app_refuses_a_non_s3_dataset_root() -> None:
    with pytest.raises(ValueError, match="not an s3:// URL"):
        create_app(token=TOKEN, dataset_roots=["/data/raw"], emit=Recorder())


def test_keys_are_not_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="mammoseg")
    client.post("/minio/events", json=minio_body("P_00042_secret.dcm"), headers=AUTH)
    client.post("/minio/events", json=minio_body("..%2FP_00042_secret.dcm"), headers=AUTH)
    assert caplog.records, "the bridge logs counts"
    assert "P_00042" not in caplog.text


def test_parse_notification_fills_a_missing_event_time() -> None:
    body = minio_body()
    del body["Records"][0]["eventTime"]
    now = datetime(2026, 2, 1, tzinfo=UTC)
    records, ignored = parse_notification(body, now=now)
    assert ignored == 0
    assert records[0].event_time == now


# --- one real emission into a Prefect test server ----------------------------------------
def test_emits_for_real_into_a_prefect_server(prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.events.worker import EventsWorker

    key = f"harness/{uuid.uuid4().hex}.dcm"
    uri = f"s3://raw/{key}"
    client = TestClient(create_app(token=TOKEN))  # default emitter: prefect.events.emit_event
    body = minio_body(key, event_time=datetime.now(UTC).isoformat())
    r = client.post("/minio/events", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    EventsWorker.drain_all(timeout=30)
    flt = EventFilter(
        event=EventNameFilter(name=[EVENT_NAME]), resource=EventResourceFilter(id=[uri])
    )
    events = []
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as api:
        while time.monotonic() < deadline:
            events = api.read_events(filter=flt, limit=10).events  # server caps at 50
            if events:
                break
            time.sleep(0.5)
    assert len(events) == 1
    (ev,) = events
    assert ev.id == object_event_id(uri, "f22d66a7d0dbbc4a7cf1122eeeb1a106")
    assert ev.resource["mammoseg.dataset_root"] == "s3://raw"
    assert ev.resource["prefect.resource.name"] == key
    assert ev.payload["size"] == 488
