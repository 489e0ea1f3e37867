"""The served deployments: `retrain-weekly` (cron) and `new-data` (debounced event trigger).

Both run :func:`flows.new_data.new_data_flow`, at most one flow run at a time per deployment
(further runs wait in the queue: ``ENQUEUE``).

Debounce semantics (read from ``prefect/server/events/triggers.py``, Prefect 3.9): a *Reactive*
trigger fires on the first matching event and then ignores the rest of its ``within`` window
(leading edge, so a burst starts its run before the burst has finished uploading). We want the
trailing edge instead, so the trigger is *Proactive* with ``after == expect ==
{mammoseg.object.created}``: each upload opens a window of ``within`` seconds, every further
upload inside it restarts the window, and once a window passes with fewer than ``threshold``
further uploads the automation fires once, with the burst's last event as its context.
``for_each`` on the dataset-root label keeps one window per dataset root (and, as Proactive
triggers without ``for_each`` would fire every window even with no event, it is required).
The server checks proactive triggers every 5 s (``PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY``),
so a run starts about ``within`` + 0–5 s after the last upload, plus the runner's poll interval.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.events.schemas.automations import Posture
from prefect.schedules import Cron

from mammoseg.settings import Settings

OBJECT_CREATED = "mammoseg.object.created"
DATASET_ROOT_LABEL = "mammoseg.dataset_root"
WEEKLY = "retrain-weekly"
NEW_DATA = "new-data"
# Only the dataset root reaches the run's parameters: the object key may carry a patient ID.
EVENT_PARAMETERS = {"source_url": "{{ event.resource['" + DATASET_ROOT_LABEL + "'] }}", "trigger": "event"}


def canonical_root(url: str) -> str:
    """A dataset root as the watcher and bridge spell it in ``mammoseg.dataset_root``:
    ``s3://bucket/prefix`` without a trailing slash; a path or ``file://`` URL as an absolute,
    resolved ``file://`` URL (relative paths resolve against the current directory)."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        return f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")
    path = unquote(urlsplit(url).path) if url.startswith("file://") else url
    return Path(path).expanduser().resolve().as_uri()


def one_at_a_time() -> ConcurrencyLimitConfig:
    """One flow run of a deployment at a time; later ones are queued, not cancelled."""
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def debounce_description(threshold: int, within_s: int) -> str:
    """The automation's description in words: ``threshold`` 1 is "no further upload"."""
    quiet = (f"no further upload arrives within {within_s} s" if threshold == 1
             else f"fewer than {threshold} further uploads arrive within {within_s} s")
    return (f"Retrains once the uploads to a dataset root pause: it starts when {quiet} of the last one "
            "(each upload restarts the wait), one run per dataset root.")


def new_data_trigger(settings: Settings, parameters: dict[str, str] | None = None) -> DeploymentEventTrigger:
    """The debounced trigger of `new-data` (see the module docstring for the semantics).

    Matches only uploads under ``settings.retrain_source_url`` when it is set, else uploads under
    any dataset root. ``parameters`` defaults to :data:`EVENT_PARAMETERS` (Jinja, rendered by the
    server from the burst's last event).
    """
    root = settings.retrain_source_url
    return DeploymentEventTrigger(
        name="mammoseg: new data → retrain (debounced)",
        description=debounce_description(settings.trigger_threshold, settings.trigger_within_s),
        expect={OBJECT_CREATED},
        after={OBJECT_CREATED},
        for_each={DATASET_ROOT_LABEL},
        posture=Posture.Proactive,
        threshold=settings.trigger_threshold,
        within=timedelta(seconds=settings.trigger_within_s),
        match={DATASET_ROOT_LABEL: canonical_root(root) if root else "*"},
        parameters=dict(parameters if parameters is not None else EVENT_PARAMETERS),
    )


INFER_ON_ARRIVAL = "infer-on-arrival"
STUDY_ARRIVED = "mammoseg.study.arrived"
#: The run's parameters from the study event: the PACS and Orthanc's study id (a hash, no UID).
STUDY_PARAMETERS = {
    "pacs_url": "{{ event.resource['mammoseg.pacs_url'] }}",
    "orthanc_study": "{{ event.resource['mammoseg.orthanc_study'] }}",
}


def study_arrived_trigger(settings: Settings) -> DeploymentEventTrigger:
    """`infer-on-arrival`'s trigger: one run per stable study of the configured PACS.

    Orthanc's ``StableStudy`` is already the per-study debounce (no new instance for
    ``StableAge`` s). This *Reactive* trigger, ``for_each`` study, then fires on the first
    announcement and ignores re-announcements of that study for ``pacs_debounce_s``; later ones
    start a run that finds every SEG already there and stores nothing (the flow is idempotent).
    """
    from mammoseg.pacs import parse_pacs_url

    pacs = parse_pacs_url(settings.pacs_url).url if settings.pacs_url else "*"
    return DeploymentEventTrigger(
        name="mammoseg: study arrived in the PACS → DICOM SEG",
        description="One run per study announced stable by the PACS watcher (mammoseg.study.arrived).",
        expect={STUDY_ARRIVED},
        for_each={"prefect.resource.id"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(seconds=PACS_DEBOUNCE_S),
        match={"mammoseg.pacs_url": pacs},
        parameters=dict(STUDY_PARAMETERS),
    )


#: Re-announcements of one study within this many seconds start no second run.
PACS_DEBOUNCE_S = 300


def infer_on_arrival_deployment(settings: Settings) -> RunnerDeployment:
    from flows.infer_on_arrival import infer_on_arrival_flow

    return infer_on_arrival_flow.to_deployment(
        INFER_ON_ARRIVAL,
        triggers=[study_arrived_trigger(settings)],
        concurrency_limit=one_at_a_time(),
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["mammoseg", "pacs"],
        description="Segment a study that arrived in the PACS with the champion; store the DICOM SEG back (STOW-RS).",
    )


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    """`retrain-weekly` on ``settings.retrain_cron`` (UTC) and `new-data` on upload events.

    Dataset roots and the store are *not* baked into the deployments: the flow reads them from
    the settings of the process that serves it, so secrets and URLs stay in its environment.
    """
    from flows.new_data import new_data_flow

    common = {
        "concurrency_limit": one_at_a_time(),
        "entrypoint_type": EntrypointType.MODULE_PATH,
        "tags": ["mammoseg"],
    }
    weekly = new_data_flow.to_deployment(
        WEEKLY,
        schedules=[Cron(settings.retrain_cron, timezone="UTC")],
        parameters={"trigger": "schedule"},
        description=(f"On cron `{settings.retrain_cron}` in UTC: retrain on MAMMOSEG_RETRAIN_SOURCE_URL, "
                     "evaluate on the held-out set, publish if better."),
        **common,
    )
    new_data = new_data_flow.to_deployment(
        NEW_DATA,
        triggers=[new_data_trigger(settings)],
        parameters={"trigger": "event"},
        description="Retrain after a burst of uploads to a dataset root (mammoseg.object.created events).",
        **common,
    )
    pacs = [infer_on_arrival_deployment(settings)] if settings.pacs_url else []  # issue 10
    return [weekly, new_data, *pacs]


def serve_deployments(
    deployments: list[RunnerDeployment], on_registered: Callable[[], object] | None = None
) -> None:
    """Register the deployments, call ``on_registered`` (e.g. start the store watcher, so no
    event is sent before the trigger exists), then execute their runs here until interrupted.

    Like :func:`prefect.serve`; schedules are paused on shutdown and resumed on the next serve.
    """
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        runner.add_deployment(deployment)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    print(f"mammoseg serve: serving {names}; Ctrl-C to stop", file=sys.stderr)
    if on_registered is not None:
        on_registered()
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass


# --- work pools (issue 9): CPU stages and GPU training as separately pooled deployments -------

#: Which pool each pooled deployment runs in: the data stages (ingest → validate → preprocess, and
#: evaluation) on CPU workers, everything that trains on GPU workers. The per-case fan-out of the
#: CPU stages goes to the Dask cluster named by MAMMOSEG_DASK_ADDRESS when one is set.
POOLED = {
    "data-pipeline": ("flows.data_pipeline:data_pipeline_flow", "cpu"),
    "evaluate": ("flows.evaluate:evaluate_flow", "cpu"),
    "retrain": ("flows.retrain:retrain_flow", "gpu"),
}


class WorkPoolsUnset(ValueError):
    """Pooled deployments were asked for without MAMMOSEG_CPU_WORK_POOL / MAMMOSEG_GPU_WORK_POOL."""


def pool_names(settings: Settings) -> dict[str, str]:
    """``{"cpu": ..., "gpu": ...}`` from the settings; :class:`WorkPoolsUnset` when either is unset."""
    missing = [f"MAMMOSEG_{k.upper()}_WORK_POOL" for k, v in (("cpu", settings.cpu_work_pool), ("gpu", settings.gpu_work_pool)) if not v]
    if missing:
        raise WorkPoolsUnset(f"{' and '.join(missing)} not set: name the work pools, or use `mammoseg serve` (no pools)")
    return {"cpu": str(settings.cpu_work_pool), "gpu": str(settings.gpu_work_pool)}


def build_pool_deployments(settings: Settings) -> list[RunnerDeployment]:
    """The deployments for work pools (``prefect.yaml`` is the same in YAML): `data-pipeline` and
    `evaluate` in the CPU pool, `retrain` and the served `retrain-weekly` / `new-data` (whose
    chain trains) in the GPU pool. Workers run them from their working directory (the image's
    app folder), with the settings of their own environment."""
    import importlib

    pools = pool_names(settings)
    out: list[RunnerDeployment] = []
    for name, (entrypoint, kind) in POOLED.items():
        module, _, attr = entrypoint.partition(":")
        flow_obj = getattr(importlib.import_module(module), attr)
        out.append(flow_obj.to_deployment(
            name, work_pool_name=pools[kind], tags=["mammoseg", f"pool:{kind}"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            description=f"{name} on the {kind.upper()} work pool {pools[kind]!r}.",
        ))
    for served in build_deployments(settings):
        served.work_pool_name = pools["gpu"]
        served.tags = [*served.tags, "pool:gpu"]
        out.append(served)
    return out


def apply_pool_deployments(settings: Settings) -> list[str]:
    """Register :func:`build_pool_deployments` with the Prefect API (the pools must exist:
    ``prefect work-pool create <name> --type process``); their ``flow/deployment`` names."""
    names = []
    for deployment in build_pool_deployments(settings):
        deployment.apply()
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names
