"""Which failures the I/O tasks retry: transient network/storage faults only, never bad data."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from mammoseg.imageio import ImageDecodeError
from mammoseg.storage import ObjectNotFound
from tasks.retry import is_transient


def _s3(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("exc", [
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
    _s3("SlowDown", 503),
    _s3("InternalError", 500),
    _s3("ServiceUnavailable", 503),
    _s3("Whatever", 502),  # by HTTP status
])
def test_network_and_storage_faults_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    _s3("NoSuchKey", 404),
    _s3("AccessDenied", 403),
    _s3("InvalidRequest", 400),
    ObjectNotFound("raw/x.dcm"),
    ImageDecodeError("truncated PNG"),
    ValueError("bad CSV"),
])
def test_bad_requests_and_bad_data_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)
