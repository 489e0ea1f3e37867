"""What a re-run may reuse: fingerprints of a data-pipeline run's inputs, recorded GX validations."""

from __future__ import annotations

import json

import pytest

from mammoseg.layout import validation_reuse_key
from mammoseg.rerun import key_tag, rebase_uri, run_fingerprint
from mammoseg.storage import LocalStore, ObjectInfo
from mammoseg.validation.reuse import find_reusable, record_validation, validation_digest


def _objs(*triples: tuple[str, int, str]) -> list[ObjectInfo]:
    return [ObjectInfo(key=k, size=s, etag=e, uri=f"file:///src/{k}") for k, s, e in triples]


BASE = _objs(("a/1.dcm", 10, "e1"), ("a/2.dcm", 20, "e2"), ("csv/x.csv", 5, "c1"))


def _fp(objects=BASE, **kw) -> str:
    args = {"params_digest": "p1", "settings_json": "{}", "key_tag": "k1", "code": "c"} | kw
    return run_fingerprint("cbis-ddsm", objects, **args)


def test_the_fingerprint_ignores_listing_order_and_sees_every_input() -> None:
    assert _fp() == _fp(list(reversed(BASE)))
    changed = {
        "an image's content": _objs(("a/1.dcm", 10, "e1-new"), ("a/2.dcm", 20, "e2"), ("csv/x.csv", 5, "c1")),
        "a CSV's size": _objs(("a/1.dcm", 10, "e1"), ("a/2.dcm", 20, "e2"), ("csv/x.csv", 6, "c1")),
        "a new object": BASE + _objs(("a/3.dcm", 1, "e3")),
        "a removed object": BASE[:2],
        "a renamed object": _objs(("a/1b.dcm", 10, "e1"), ("a/2.dcm", 20, "e2"), ("csv/x.csv", 5, "c1")),
    }
    seen = {_fp()}
    for what, objects in changed.items():
        fp = _fp(objects)
        assert fp not in seen, what
        seen.add(fp)
    for kw in ({"params_digest": "p2"}, {"settings_json": '{"a": 1}'}, {"key_tag": "k2"}, {"code": "c2"}):
        assert _fp(**kw) not in seen, kw
    assert run_fingerprint("inbreast", BASE, params_digest="p1", settings_json="{}", key_tag="k1", code="c") not in seen


def test_the_key_tag_stands_for_the_key_without_showing_it() -> None:
    tag = key_tag("my-private-key")
    assert tag == key_tag("my-private-key") != key_tag("my-private-key2")
    assert "my-private-key" not in tag and len(tag) == 64


def test_rebase_moves_only_uris_of_the_old_run() -> None:
    assert rebase_uri("file:///s/runs/R1/preprocessed.csv", "R1", "R2") == "file:///s/runs/R2/preprocessed.csv"
    assert rebase_uri("file:///s/runs/R0/data_docs/index.html", "R1", "R2") == "file:///s/runs/R0/data_docs/index.html"
    assert rebase_uri(None, "R1", "R2") is None


def test_the_validation_digest_changes_with_the_table_and_the_gate_limit() -> None:
    table = b"case_id,x\nc1,1\n"
    d = validation_digest("lesion_metadata", table, max_fraction=0.2)
    assert d == validation_digest("lesion_metadata", table, max_fraction=0.2)
    assert d != validation_digest("lesion_metadata", table + b"c2,2\n", max_fraction=0.2)
    assert d != validation_digest("lesion_metadata", table, max_fraction=0.3)
    assert d != validation_digest("pairing", table, max_fraction=0.2)


def test_only_passed_validations_are_recorded_and_found(tmp_path) -> None:
    store = LocalStore(tmp_path)
    passed = {"suite": "pairing", "success": True, "results": []}
    assert record_validation(store, "pairing", "d1", run_id="R1", report={**passed, "success": False},
                             summary_text="", data_docs_uri=None) is None
    assert find_reusable(store, "pairing", "d1") is None
    record_validation(store, "pairing", "d1", run_id="R1", report=passed, summary_text="ok", data_docs_uri=None)
    found = find_reusable(store, "pairing", "d1")
    assert found is not None and found.run_id == "R1"
    assert found.report_for("R2")["reused"] == {"from_run": "R1", "digest": "d1"}
    assert found.report_for("R2")["run_name"] == "R2"
    assert find_reusable(store, "pairing", "d2") is None  # another digest: GX runs


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"suite": "pairing"}', json.dumps({"suite": "pairing", "digest": "other", "run_id": "R",
     "report": {"success": True}, "summary_text": "", "data_docs_uri": None}).encode()],
    ids=["garbage", "fields-missing", "another-digest"],
)
def test_an_unreadable_or_foreign_record_is_a_miss_not_a_pass(tmp_path, body: bytes) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(validation_reuse_key("pairing", "d1"), body)
    assert find_reusable(store, "pairing", "d1") is None
