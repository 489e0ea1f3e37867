"""dicomweb:// URLs, UIDs and the PACS store's key prefixes (pure; no server)."""

from __future__ import annotations

import pytest

from mammoseg.pacs import PacsError, check_uid, is_pacs_url, parse_pacs_url, split_store_url


def test_dicomweb_urls_split_into_dicomweb_and_rest_roots() -> None:
    a = parse_pacs_url("dicomweb://pacs.example:8042/dicom-web/")
    assert (a.url, a.dicomweb_url, a.rest_url) == (
        "dicomweb://pacs.example:8042/dicom-web", "http://pacs.example:8042/dicom-web", "http://pacs.example:8042")
    b = parse_pacs_url("dicomwebs://pacs.example/dicom-web")
    assert (b.dicomweb_url, b.rest_url) == ("https://pacs.example/dicom-web", "https://pacs.example")
    assert is_pacs_url("dicomweb://h:1/x") and not is_pacs_url("s3://b/k") and not is_pacs_url("dicomweb")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:8042/dicom-web", "must start with dicomweb://"),
        ("dicomweb://user:pw@h:8042/dicom-web", "credentials do not belong in the PACS URL"),
        ("dicomweb:///dicom-web", "has no host"),
        ("dicomweb://h:99999/dicom-web", "invalid port"),
        ("dicomweb://h:1/dicom-web?x=1", "query or fragment"),
    ],
)
def test_hostile_pacs_urls_are_refused_without_echoing_secrets(url: str, message: str) -> None:
    with pytest.raises(PacsError) as info:
        parse_pacs_url(url)
    assert message in str(info.value) and "pw" not in str(info.value)


def test_store_urls_carry_study_and_series_as_a_key_prefix() -> None:
    assert split_store_url("dicomweb://h:1/dicom-web") == ("dicomweb://h:1/dicom-web", "")
    assert split_store_url("dicomweb://h:1/dicom-web/1.2.3/4.5.6/") == ("dicomweb://h:1/dicom-web", "1.2.3/4.5.6")
    assert split_store_url("dicomweb://h:1/1.2") == ("dicomweb://h:1", "1.2")


@pytest.mark.parametrize("uid", ["", "1.2.a", "../etc", "1..2", "1" * 65, "1.2/3"])
def test_bad_uids_are_refused(uid: str) -> None:
    with pytest.raises(PacsError):
        check_uid(uid)
    assert check_uid("1.2.840.10008.5.1.4.1.1.66.4")
