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


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry when the failure was a transient I/O error."""
    try:
        state.result()
    except _transient_errors():
        return True
    except Exception:  # noqa: BLE001 - anything else is not worth retrying
        return False
    return False


IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [1, 5, 15],
    "retry_condition_fn": retry_on_io_error,
}
