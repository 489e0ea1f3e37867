"""Retries only where they help: transient network/storage errors, never bad data."""

from __future__ import annotations

from typing import Any


def _transient_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    return (
        ConnectionError,
        TimeoutError,
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
    )


def is_transient(exc: BaseException) -> bool:
    """A network or storage fault worth retrying: connection/timeout errors, and S3 5xx or
    throttling responses; never a missing object, a denied request or bad data."""
    from botocore.exceptions import ClientError

    from mammoseg.storage import TRANSIENT_S3_CODES

    if isinstance(exc, _transient_errors()):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return str(error.get("Code", "")) in TRANSIENT_S3_CODES or status in TRANSIENT_S3_CODES
    return False


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry when the failure was a transient I/O error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified below; anything else is not worth retrying
        return is_transient(exc)
    return False


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 5, 15],
    "retry_condition_fn": retry_on_io_error,
}
