"""Where the per-case fan-out runs: Prefect's thread pool in the flow's process, or a Dask cluster
through prefect-dask's ``DaskTaskRunner``.

* ``MAMMOSEG_DASK_ADDRESS`` names a running scheduler: the cases go to that cluster (its workers
  need this package installed and the same ``MAMMOSEG_*`` store settings in their environment).
* Otherwise a ``distributed.LocalCluster`` of worker *processes* is started for the fan-out and
  closed after it: ``MAMMOSEG_DASK_WORKERS`` processes (default: one per CPU core), one thread
  each, each with ``MAMMOSEG_DASK_MEMORY_LIMIT`` (Dask spills, pauses and restarts a worker
  beyond it).
* ``MAMMOSEG_FANOUT_RUNNER`` = ``auto`` (default) uses Dask only when an address is set or a run
  has at least ``MAMMOSEG_DASK_MIN_CASES`` cases, since starting a cluster costs seconds that a
  test or a run of a few dozen cases does not earn back; ``dask`` / ``thread`` force one.

Memory stays bounded whatever the dataset size: a case task receives keys (a ``CaseSpec``), reads
its own image, writes its arrays to the store and returns a small record; no pixel array crosses
the cluster, and each decode is capped by ``MAMMOSEG_MAX_IMAGE_PIXELS``.

The Dask modules are imported inside :func:`make_task_runner` only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from mammoseg.settings import Settings

RunnerKind = Literal["thread", "dask"]


def runner_kind(settings: Settings, n_cases: int) -> RunnerKind:
    """``thread`` or ``dask`` for a fan-out of ``n_cases`` (see the module docstring)."""
    if settings.fanout_runner != "auto":
        return settings.fanout_runner
    if settings.dask_address or n_cases >= settings.dask_min_cases:
        return "dask"
    return "thread"


def local_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of the ``LocalCluster`` started when no address is set: worker
    processes (not threads: the per-case work is CPU-bound Python/numpy/OpenCV)."""
    return {
        "n_workers": settings.dask_workers or os.cpu_count() or 1,
        "threads_per_worker": settings.dask_threads_per_worker,
        "processes": True,
        "memory_limit": settings.dask_memory_limit,
        "dashboard_address": None,  # no web server per run
        # OpenCV's own thread pool would start one thread per core in every worker process:
        # as many threads as the worker has (Dask already sets OMP/MKL/OpenBLAS to 1)
        "env": {"OPENCV_FOR_THREADS_NUM": str(settings.dask_threads_per_worker)},
    }


def make_task_runner(settings: Settings, n_cases: int) -> Any | None:
    """A ``DaskTaskRunner`` for the fan-out, or None when the flow's own (thread) runner is to be
    used (see :func:`runner_kind`)."""
    if runner_kind(settings, n_cases) == "thread":
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(settings))


def fan_out(task: Any, mapped: dict[str, Sequence[Any]], static: dict[str, Any], settings: Settings) -> list[Any]:
    """``task`` once per element of the ``mapped`` sequences (all of one length), with the
    ``static`` arguments, on the runner :func:`make_task_runner` picks; results in input order.

    Call it inside a flow run: the task runs appear in that flow run either way.
    """
    from prefect import unmapped

    lengths = {len(v) for v in mapped.values()}
    if len(lengths) > 1:
        raise ValueError(f"mapped arguments differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if n == 0:
        return []
    parameters = {k: list(v) for k, v in mapped.items()} | {k: unmapped(v) for k, v in static.items()}
    runner = make_task_runner(settings, n)
    if runner is None:
        return [f.result() for f in task.map(**parameters)]
    with runner:
        futures = runner.map(task, parameters)
        return [f.result() for f in futures]
