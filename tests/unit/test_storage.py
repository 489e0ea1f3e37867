"""The object store: key safety, local and S3 (over HTTP, moto server) with the same semantics."""

from __future__ import annotations

import io

import pytest

from mammoseg.settings import get_settings
from mammoseg.storage import (
    LocalStore,
    ObjectNotFound,
    S3Store,
    UnsafeKeyError,
    open_store,
    open_uri,
    validate_key,
)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../secret",
        "a/../../b",
        "a/./b",
        "a//b",
        "C:/windows",
        "a\\b",
        "a/%2e%2e/b",
        "a/b\x00c",
        "caf\u0065\u0301.dcm",  # e + combining accent: not NFC
    ],
)
def test_unsafe_keys_are_refused_with_a_reason(key: str) -> None:
    with pytest.raises(UnsafeKeyError, match="refused object key|empty object key"):
        validate_key(key)


@pytest.mark.parametrize(
    "key", ["a.dcm", "Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-09887/1-cropped images-26184/000001.dcm", "caf\u00e9/x"]
)
def test_ordinary_keys_pass(key: str) -> None:
    assert validate_key(key) == key


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/root/prefix", get_settings())


def test_write_read_list_head_delete(store) -> None:
    info = store.write_bytes("a/one.bin", b"hello")
    assert info.size == 5 and info.etag == "5d41402abc4b2a76b9719d911017c592"  # md5("hello")
    store.write_bytes("a/two.bin", b"world!")
    store.write_bytes("b/three.bin", b"x")
    assert [o.key for o in store.list()] == ["a/one.bin", "a/two.bin", "b/three.bin"]
    assert [o.key for o in store.list("a/")] == ["a/one.bin", "a/two.bin"]
    assert store.read_bytes("a/two.bin") == b"world!"
    # every read is recorded with its size and ETag
    assert store.read_log["a/two.bin"].size == 6
    assert store.head("a/one.bin").etag == info.etag
    assert store.exists("b/three.bin")
    store.delete("b/three.bin")
    assert not store.exists("b/three.bin")
    with pytest.raises(ObjectNotFound):
        store.read_bytes("b/three.bin")
    # URIs map back to keys; a URI outside the store is refused
    assert store.key_from_uri(store.uri("a/one.bin")) == "a/one.bin"
    with pytest.raises(UnsafeKeyError):
        store.key_from_uri("s3://elsewhere/x" if isinstance(store, S3Store) else "file:///etc/passwd")


def test_keys_with_spaces_round_trip_through_uris(store) -> None:
    key = "Mass-Test_P_1_LEFT_CC_1/10-04-2016-DDSM-1/1-cropped images-2/000001.dcm"
    store.write_bytes(key, b"dicom")
    s, k = open_uri(store.uri(key), get_settings())
    assert s.read_bytes(k) == b"dicom"
    assert store.key_from_uri(store.uri(key)) == key


def test_escaping_keys_are_refused_on_every_operation(store) -> None:
    for op in (
        lambda: store.read_bytes("../outside"),
        lambda: store.write_bytes("../outside", b"x"),
        lambda: store.head("/abs"),
        lambda: store.open("a/%2F..%2Fb"),
    ):
        with pytest.raises(UnsafeKeyError):
            op()


def test_streaming_and_large_multipart_write(store) -> None:
    """12 MiB crosses the 8 MiB multipart threshold on S3; content survives both ways."""
    data = bytes(range(256)) * (12 * 4096)
    info = store.write_stream("big/blob.bin", io.BytesIO(data))
    assert info.size == len(data)
    with store.open("big/blob.bin") as fh:
        chunks = []
        while chunk := fh.read(1 << 20):
            chunks.append(chunk)
    assert b"".join(chunks) == data
    if isinstance(store, S3Store):
        assert "-" in info.etag  # multipart ETags carry the part count


def test_listing_paginates_past_one_page(s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/many", get_settings())
    for i in range(1005):  # one S3 page holds 1000 keys
        store.write_bytes(f"k/{i:05d}", b"")
    assert len(list(store.list("k/"))) == 1005


def test_local_store_writes_atomically_and_lists_no_temp_files(tmp_path) -> None:
    store = LocalStore(tmp_path)

    class Boom(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            raise OSError("disk gone")

    with pytest.raises(OSError):
        store.write_stream("x/partial.bin", Boom())
    assert list(store.list()) == []
    assert not store.exists("x/partial.bin")


def test_read_prefix_reads_only_the_start(store) -> None:
    store.write_bytes("h.dcm", b"0123456789")
    assert store.read_prefix("h.dcm", 4) == b"0123"
    assert store.read_prefix("h.dcm", 100) == b"0123456789"
    with pytest.raises(ObjectNotFound):
        store.read_prefix("missing.dcm", 4)


def test_s3_listing_skips_an_unsafe_key_and_lists_the_rest(s3_bucket: str, caplog) -> None:
    from mammoseg.storage import make_s3_client

    client = make_s3_client(get_settings())
    client.put_object(Bucket=s3_bucket, Key="root/ok.dcm", Body=b"1")
    client.put_object(Bucket=s3_bucket, Key="root/a/../../evil.dcm", Body=b"2")
    store = open_store(f"s3://{s3_bucket}/root", get_settings())
    assert [o.key for o in store.list()] == ["ok.dcm"]
    assert "skipped one object whose key is unsafe" in caplog.text
    assert "evil" not in caplog.text
