"""One retrain at a time across deployments: the global concurrency limit serializes runs."""

from __future__ import annotations

import threading
import time

from prefect import flow
from prefect.concurrency.sync import concurrency

from flows.new_data import RETRAIN_LIMIT, ensure_retrain_limit


def test_the_retrain_limit_exists_with_one_slot_and_serializes_runs(prefect_harness: None) -> None:
    from prefect import get_client

    ensure_retrain_limit()
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(RETRAIN_LIMIT).limit == 1

    spans: list[tuple[float, float]] = []

    @flow
    def fake_retrain(seconds: float) -> None:
        with concurrency(RETRAIN_LIMIT, occupy=1):  # what new_data_flow does around the retrain
            start = time.monotonic()
            time.sleep(seconds)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=fake_retrain, args=(1.5,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(spans) == 2
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start >= first_end - 0.05, f"two retrains overlapped: {spans}"
