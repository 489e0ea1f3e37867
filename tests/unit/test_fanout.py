"""Which runner the per-case fan-out uses, and the LocalCluster it starts (hand-computed cases)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mammoseg.fanout import local_cluster_kwargs, make_task_runner, runner_kind
from mammoseg.settings import Settings


def test_auto_uses_dask_for_an_address_or_a_large_run() -> None:
    s = Settings(dask_min_cases=200)
    assert runner_kind(s, 199) == "thread"
    assert runner_kind(s, 200) == "dask"
    assert runner_kind(Settings(dask_address="tcp://10.0.0.5:8786"), 3) == "dask"
    assert runner_kind(Settings(fanout_runner="thread", dask_address="tcp://10.0.0.5:8786"), 10_000) == "thread"
    assert runner_kind(Settings(fanout_runner="dask"), 1) == "dask"


def test_local_cluster_is_worker_processes_sized_by_the_settings(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    kw = local_cluster_kwargs(Settings())
    assert (kw["n_workers"], kw["threads_per_worker"], kw["processes"], kw["memory_limit"]) == (6, 1, True, "auto")
    assert kw["env"] == {"OPENCV_FOR_THREADS_NUM": "1"}
    kw = local_cluster_kwargs(Settings(dask_workers=2, dask_threads_per_worker=3, dask_memory_limit="4GiB"))
    assert (kw["n_workers"], kw["threads_per_worker"], kw["memory_limit"]) == (2, 3, "4GiB")
    assert kw["env"] == {"OPENCV_FOR_THREADS_NUM": "3"}


def test_runner_objects() -> None:
    assert make_task_runner(Settings(fanout_runner="thread"), 10) is None
    runner = make_task_runner(Settings(dask_address="tcp://10.0.0.5:8786"), 10)
    assert runner.address == "tcp://10.0.0.5:8786"  # not started: nothing is contacted yet
    local = make_task_runner(Settings(fanout_runner="dask", dask_workers=2), 10)
    assert local.address is None and local.cluster_kwargs["n_workers"] == 2


def test_bad_fanout_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(fanout_runner="ray")
    with pytest.raises(ValidationError):
        Settings(dask_workers=0)
