"""Browser URLs for store objects (what UI artifacts link to) and the local store's file server."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mammoseg.links import FileServer, artifact_key, browser_url, md_link
from mammoseg.settings import get_settings


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_artifact_key_is_what_prefect_accepts() -> None:
    assert artifact_key("internal-test-CBIS_DDSM") == "internal-test-cbis-ddsm"
    assert artifact_key("run-report-mini-mias, cbis") == "run-report-mini-mias-cbis"
    assert artifact_key("___") == "x"


def test_local_store_urls_and_file_server(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "runs" / "r1" / "overlay.png").write_bytes(b"\x89PNG fake")
    (root / "synthetic" / "cbis").mkdir(parents=True)
    (root / "synthetic" / "cbis" / "P_00001_LEFT.dcm").write_bytes(b"source")  # a source key naming a patient
    (tmp_path / "secret.txt").write_text("outside")
    with FileServer(root) as files:
        settings = get_settings(store_url=str(root), files_url=files.url)
        url = browser_url((root / "runs" / "r1" / "overlay.png").as_uri(), settings)
        assert url == f"{files.url}/runs/r1/overlay.png"
        assert _get(url) == (200, b"\x89PNG fake")
        assert md_link("overlays", (root / "runs" / "r1" / "overlay.png").as_uri(), settings) == f"[overlays]({url})"
        # hostile or out-of-scope requests: source data, listings, traversal, outside the root
        assert browser_url((root / "synthetic" / "cbis" / "P_00001_LEFT.dcm").as_uri(), settings) is None
        assert browser_url((tmp_path / "secret.txt").as_uri(), settings) is None
        for path in ("/synthetic/cbis/P_00001_LEFT.dcm", "/runs/", "/runs/r1/", "/", "/runs/../secret.txt",
                     "/runs/%2e%2e/%2e%2e/secret.txt", "/runs/r1/missing.png"):  # fmt: skip
            status, body = _get(files.url + path)
            assert status == 404 and b"P_00001" not in body, path
    # no file server (a run outside `mammoseg serve`): no URL, the URI as text
    plain = get_settings(store_url=str(root), files_url=None)
    uri = (root / "runs" / "r1" / "overlay.png").as_uri()
    assert browser_url(uri, plain) is None and md_link("overlays", uri, plain) == f"overlays: `{uri}`"
    assert browser_url(None, plain) is None and md_link("model", None, plain) == "model"


def test_s3_objects_get_presigned_urls_a_browser_can_open(s3_bucket: str) -> None:
    from mammoseg.storage import open_store

    settings = get_settings(link_expiry_s=600)
    store = open_store(f"s3://{s3_bucket}/pipeline", settings)
    uri = store.write_bytes("runs/r1/curves.png", b"png bytes", "image/png").uri
    url = browser_url(uri, settings)
    assert url and url.startswith("http") and "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    assert _get(url) == (200, b"png bytes")  # no credentials needed: the signature is the key
    # the browser reaches the endpoint under another name (compose: minio:9000 inside, 127.0.0.1 outside)
    inside = get_settings(link_expiry_s=600, s3_endpoint_url="http://minio.invalid:9000",
                          s3_browser_endpoint_url=settings.s3_endpoint_url)  # fmt: skip
    outside = browser_url(uri, inside)
    assert outside and outside.startswith(settings.s3_endpoint_url) and _get(outside) == (200, b"png bytes")


def test_file_server_port_taken_is_an_oserror(tmp_path: Path) -> None:
    with FileServer(tmp_path) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            FileServer(tmp_path, port=port)


def test_serve_starts_a_file_server_for_a_local_store_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mammoseg.serve import start_file_server

    monkeypatch.delenv("MAMMOSEG_FILES_URL", raising=False)
    (tmp_path / "store" / "models").mkdir(parents=True)
    (tmp_path / "store" / "models" / "CURRENT").write_text("v1")
    files = start_file_server(get_settings(store_url=str(tmp_path / "store"), files_port=0, files_url=None))
    assert files is not None
    try:
        import os

        assert os.environ["MAMMOSEG_FILES_URL"] == files.url  # what the served runs inherit
        assert _get(f"{files.url}/models/CURRENT") == (200, b"v1")
    finally:
        files.stop()
    assert start_file_server(get_settings(store_url="s3://bucket/prefix", files_url=None)) is None
    assert start_file_server(get_settings(store_url=str(tmp_path), files_url="http://127.0.0.1:9/")) is None
