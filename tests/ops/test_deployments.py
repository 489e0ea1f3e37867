"""Deployments against a REAL Prefect server process (SQLite, free port), started by
``mammoseg.serve.ensure_server``: what is registered, and how the event trigger behaves.

The trigger tests post ``mammoseg.object.created`` events (built by ``mammoseg.events.model``,
the same builder the bridge and watcher use) to the server's ``/api/events`` over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mammoseg.serve import ensure_server, server_healthy, stop_server, ui_url
from mammoseg.settings import Settings

REPO = Path(__file__).resolve().parents[2]
WITHIN_S = 10  # Prefect's minimum for a Proactive (trailing-edge) trigger
BURST = 50  # uploads in the burst test (the issue asks how many runs 50 uploads give)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh ``prefect server start`` on a free port; its API URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    work = tmp_path_factory.mktemp("serve-work")
    url = f"http://127.0.0.1:{_free_port()}/api"
    t0 = time.monotonic()
    api, proc = ensure_server(url, work, timeout_s=150)
    print(f"\n[ops] prefect server started in {time.monotonic() - t0:.1f} s at {api}")
    assert proc is not None and api == url
    assert (work / "prefect" / "prefect.db").exists()
    try:
        # a second call finds the running server and starts nothing
        assert ensure_server(url, work) == (url, None)
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        stop_server(proc)
        assert proc.poll() is not None


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _post_upload(api: str, root: str, name: str) -> datetime:
    """Announce one new object under ``root`` as the bridge/watcher would; returns its time."""
    from mammoseg.events.model import object_created_event

    now = datetime.now(UTC)
    event, resource, payload = object_created_event(
        f"{root}/{name}", dataset_root=root, etag=uuid.uuid4().hex, size=1234, event_time=now
    )
    body = [{"id": str(uuid.uuid4()), "occurred": now.isoformat(), "event": event,
             "resource": resource, "payload": payload, "related": []}]
    httpx.post(f"{api}/events", json=body, timeout=10).raise_for_status()
    return now


def _runs_of(deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _client() as c:
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _wait(pred, timeout_s: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --------------------------------------------------------------------------------------------

def test_ensure_server_refuses_a_silent_remote_url(tmp_path: Path) -> None:
    from mammoseg.serve import ServerUnavailable

    with pytest.raises(ServerUnavailable, match="does not answer"):
        ensure_server("http://203.0.113.9:4200/api", tmp_path, timeout_s=1)
    assert not server_healthy("http://127.0.0.1:1/api", timeout_s=0.5)
    assert ui_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200"


def test_trigger_root_is_spelled_like_the_watcher_and_bridge_spell_it(tmp_path: Path) -> None:
    from flows.deployments import DATASET_ROOT_LABEL, canonical_root, new_data_trigger
    from mammoseg.events import Watcher

    assert canonical_root("s3://bucket/raw/cbis-ddsm/") == "s3://bucket/raw/cbis-ddsm"
    assert canonical_root(str(tmp_path / "in") + "/") == (tmp_path / "in").resolve().as_uri()
    assert canonical_root((tmp_path / "in").as_uri()) == (tmp_path / "in").resolve().as_uri()
    (tmp_path / "in").mkdir()
    watcher = Watcher(str(tmp_path / "in"), name="t", state_file=tmp_path / "state.json")
    for given in (str(tmp_path / "in"), str(tmp_path / "in") + "/", (tmp_path / "in").as_uri()):
        trig = new_data_trigger(Settings(retrain_source_url=given))
        assert trig.match.root == {DATASET_ROOT_LABEL: watcher.dataset_root}, given
    assert new_data_trigger(Settings()).match.root == {DATASET_ROOT_LABEL: "*"}


def test_deployments_registered_with_schedule_trigger_and_limit(prefect_api: str) -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.events.schemas.automations import Posture

    from flows.deployments import DATASET_ROOT_LABEL, EVENT_PARAMETERS, build_deployments

    settings = Settings(
        retrain_cron="15 4 * * 2", trigger_threshold=2, trigger_within_s=45,
        retrain_source_url="s3://incoming/raw/cbis-ddsm",
    )
    deployments = build_deployments(settings)
    assert [d.name for d in deployments] == ["retrain-weekly", "new-data"]
    ids = {d.name: d.apply() for d in deployments}

    with _client() as c:
        weekly = c.read_deployment_by_name("new-data/retrain-weekly")
        new_data = c.read_deployment_by_name("new-data/new-data")
        automations = c.read_resource_related_automations(f"prefect.deployment.{ids['new-data']}")
        weekly_automations = c.read_resource_related_automations(f"prefect.deployment.{ids['retrain-weekly']}")

    # cron schedule, UTC, active; the event deployment has no schedule
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in weekly.schedules] == [("15 4 * * 2", "UTC", True)]
    assert new_data.schedules == []
    assert weekly.entrypoint == new_data.entrypoint == "flows.new_data.new_data_flow"
    # one run at a time, later ones queued
    for dep in (weekly, new_data):
        assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
        assert dep.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert weekly.parameters == {"trigger": "schedule"}

    # exactly one automation, on new-data only, with the debounce settings
    assert weekly_automations == []
    assert len(automations) == 1
    trig = automations[0].trigger
    assert trig.posture == Posture.Proactive
    assert trig.expect == trig.after == {"mammoseg.object.created"}
    assert trig.for_each == {DATASET_ROOT_LABEL}
    assert trig.threshold == 2 and trig.within == timedelta(seconds=45)
    assert trig.match.root == {DATASET_ROOT_LABEL: "s3://incoming/raw/cbis-ddsm"}
    (action,) = automations[0].actions
    assert action.type == "run-deployment" and action.deployment_id == ids["new-data"]
    assert action.parameters == EVENT_PARAMETERS
    assert "resource.id" not in str(action.parameters)  # never the object key (patient IDs)


@pytest.mark.slow
def test_burst_of_uploads_starts_one_run_after_the_burst(prefect_api: str) -> None:
    from flows.deployments import build_deployments

    settings = Settings(trigger_within_s=WITHIN_S)  # no retrain_source_url: any dataset root
    ids = {d.name: d.apply() for d in build_deployments(settings)}
    root = f"s3://incoming/raw/burst-{uuid.uuid4().hex[:6]}"
    assert _runs_of(ids["new-data"]) == []

    times = []
    for i in range(BURST):  # 50 uploads, 0.2 s apart: each restarts the quiet window
        times.append(_post_upload(prefect_api, root, f"case-{i}/img.dcm"))
        time.sleep(0.2)
    runs = _wait(lambda: _runs_of(ids["new-data"]), 90, "the new-data flow run")
    created = runs[0].created
    # trailing edge: not before the quiet period after the LAST upload
    assert created >= times[-1] + timedelta(seconds=WITHIN_S - 1), (created, times[-1])
    time.sleep(WITHIN_S + 8)  # a second firing would have happened by now
    runs = _runs_of(ids["new-data"])
    assert len(runs) == 1, [r.name for r in runs]
    assert runs[0].parameters == {"source_url": root, "trigger": "event"}
    print(f"\n[ops] burst of {BURST} uploads over {(times[-1] - times[0]).total_seconds():.1f} s → 1 run, "
          f"created {(created - times[-1]).total_seconds():.1f} s after the last upload (within={WITHIN_S} s)")


SERVE_TINY = textwrap.dedent('''
    """A served stand-in for new-data: same trigger and concurrency, a 4 s body."""
    import time

    from prefect import flow, serve

    from flows.deployments import new_data_trigger, one_at_a_time
    from mammoseg.settings import Settings


    @flow(name="tiny-new-data")
    def tiny_new_data(source_url: str, trigger: str = "manual") -> str:
        time.sleep(4)
        return source_url


    if __name__ == "__main__":
        settings = Settings(trigger_within_s={within})
        serve(tiny_new_data.to_deployment(
            "tiny", triggers=[new_data_trigger(settings)], concurrency_limit=one_at_a_time()
        ))
''')


@contextlib.contextmanager
def served(
    script: str, name: str, folder: Path, env: dict[str, str], args: tuple[str, ...] = (), timeout_s: float = 120
) -> Iterator[Any]:
    """Run a ``serve()`` script in its own process; yield the deployment ``name`` once it is
    registered; stop the process afterwards. The script's output lands in ``serve.log``."""
    (folder / "serve_script.py").write_text(script)
    log_path = folder / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "serve_script.py", *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            def deployment():
                from prefect.exceptions import ObjectNotFound

                try:
                    with _client() as c:
                        return c.read_deployment_by_name(name)
                except ObjectNotFound:
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    return None

            yield _wait(deployment, timeout_s, f"the served deployment {name}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def served_tiny(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``serve()`` of a tiny flow with the real trigger + limit, in its own process."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    folder = tmp_path_factory.mktemp("served")
    with served(SERVE_TINY.format(within=WITHIN_S), "tiny-new-data/tiny", folder, env, timeout_s=90) as dep:
        yield dep


def _finished(dep_id: Any, n: int) -> list[Any]:
    runs = [r for r in _runs_of(dep_id) if r.state and r.state.is_final()]
    return runs if len(runs) >= n else []


@pytest.mark.slow
def test_median_upload_to_flow_start_latency(prefect_api: str, served_tiny: Any) -> None:
    latencies, created = [], []
    for k in range(3):
        root = f"s3://incoming/raw/latency-{k}-{uuid.uuid4().hex[:4]}"
        for i in range(3):
            last = _post_upload(prefect_api, root, f"img-{i}.dcm")
            time.sleep(0.2)
        run = _wait(
            lambda root=root: next((r for r in _runs_of(served_tiny.id)
                                    if r.parameters.get("source_url") == root and r.start_time), None),
            180, f"a started run for burst {k}",  # generous: a loaded CI machine polls slowly
        )
        latencies.append((run.start_time - last).total_seconds())
        created.append((run.created - last).total_seconds())
        _wait(lambda n=k + 1: _finished(served_tiny.id, n), 180, "the run to finish")
    runs = _runs_of(served_tiny.id)
    assert len(runs) == 3 and all(r.state.is_completed() for r in runs), [(r.name, r.state) for r in runs]
    med = statistics.median(latencies)
    print(f"\n[ops] upload → flow-run start: median {med:.1f} s (samples {', '.join(f'{x:.1f}' for x in latencies)}); "
          f"upload → run created: median {statistics.median(created):.1f} s; "
          f"debounce within={WITHIN_S} s, proactive check 5 s, runner poll 10 s")
    assert WITHIN_S - 1 <= med <= WITHIN_S + 30


@pytest.mark.slow
def test_overlapping_triggers_never_run_concurrently(prefect_api: str, served_tiny: Any) -> None:
    before = {r.id for r in _runs_of(served_tiny.id)}
    roots = [f"s3://incoming/raw/overlap-{c}-{uuid.uuid4().hex[:4]}" for c in "ab"]
    for root in roots:  # two dataset roots at once → two firings, two runs due together
        _post_upload(prefect_api, root, "img.dcm")

    def both_done() -> list[Any]:
        new = [r for r in _runs_of(served_tiny.id) if r.id not in before]
        return new if len(new) == 2 and all(r.state.is_final() for r in new) else []

    a, b = sorted(_wait(both_done, 110, "both runs to finish"), key=lambda r: r.start_time)
    assert {a.parameters["source_url"], b.parameters["source_url"]} == set(roots)
    assert a.state.is_completed() and b.state.is_completed()
    assert a.end_time <= b.start_time, f"runs overlapped: {a.start_time}–{a.end_time} vs {b.start_time}–{b.end_time}"
    print(f"\n[ops] two simultaneous triggers: run 2 started {(b.start_time - a.end_time).total_seconds():.1f} s "
          "after run 1 ended (limit 1, ENQUEUE)")


@pytest.mark.slow
def test_mammoseg_serve_starts_a_server_registers_and_stops_cleanly(tmp_path: Path) -> None:
    import signal

    url = f"http://127.0.0.1:{_free_port()}/api"
    watched = tmp_path / "incoming" / "cbis-ddsm"
    watched.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MAMMOSEG_"))}
    env |= {"MAMMOSEG_WORK_DIR": str(tmp_path / "work"), "MAMMOSEG_STORE_URL": str(tmp_path / "store"),
            "MAMMOSEG_RETRAIN_SOURCE_URL": str(watched), "MAMMOSEG_HELDOUT_SOURCE_URL": str(tmp_path / "mias")}
    err = tmp_path / "serve.err"
    with open(err, "wb") as log:
        # SIGINT at its default in the child, as from a terminal: a background job of a shell
        # without job control (`bash .ci/run &`, nohup) runs with it ignored, which a child
        # inherits, and the Ctrl-C below would be lost (an ignored signal stays ignored over exec)
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "mammoseg.cli", "serve", "--api-url", url],
                                    cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # the watcher line follows the "serving" line once the watcher has loaded its state
            _wait(lambda: ("serving new-data/retrain-weekly, new-data/new-data" in err.read_text()
                           and "watching" in err.read_text()) or proc.poll() is not None,
                  150, "mammoseg serve to register its deployments and start watching")
            assert proc.poll() is None, err.read_text()[-3000:]
            text = err.read_text()
            assert f"Prefect UI at {ui_url(url)} (server started by mammoseg)" in text
            assert "watching" in text, text[-2000:]
            assert (tmp_path / "work" / "prefect" / "prefect.db").exists()
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: url}), _client() as c:
                names = {d.name for d in c.read_deployments()}
            assert names == {"retrain-weekly", "new-data"}
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
            rc = proc.wait(timeout=180)  # stopping the server it started can be slow on a loaded machine
    text = err.read_text()
    assert rc == 0 and "mammoseg serve: stopped" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not server_healthy(url), "the server mammoseg started is still running"
