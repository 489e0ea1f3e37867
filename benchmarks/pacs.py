"""PACS benchmark: study arrival → DICOM SEG stored, through the real chain.

A local Orthanc (DICOMweb, StableAge ``--stable-age`` s) and a real Prefect server are started;
a known-answer model is published as the champion; the ``infer-on-arrival`` deployment is served
in a child process (the same :func:`flows.deployments.infer_on_arrival_deployment` that
``mammoseg serve`` registers); the PACS watcher polls Orthanc's changes feed every
``--poll`` s and posts ``mammoseg.study.arrived`` events to the server. Then, one at a time,
``--studies`` synthetic studies are uploaded (STOW-RS) and the time from the upload's return to
the SEG being found in Orthanc by study (QIDO-RS) is measured.

Finally every study is **re-announced** (a new ``mammoseg.study.arrived`` event with a new id,
as after a watcher restart or a second watcher) and one study's flow is run once more by hand:
the number of flow runs and of SEG series per study show that no second SEG appears.

Run: ``uv run python benchmarks/pacs.py`` (needs /usr/sbin/Orthanc with the DICOMweb plugin).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVE = textwrap.dedent('''
    from flows.deployments import infer_on_arrival_deployment, serve_deployments
    from mammoseg.settings import get_settings
    serve_deployments([infer_on_arrival_deployment(get_settings())])
''')


def _post_event(api: str, event: str, resource: dict, *, payload: dict, occurred: datetime, id: uuid.UUID) -> None:
    import httpx

    body = [{"id": str(id), "occurred": occurred.isoformat(), "event": event, "resource": resource,
             "payload": payload, "related": []}]
    httpx.post(f"{api}/events", json=body, timeout=10).raise_for_status()


def _study_uid(blob: bytes) -> str:
    import pydicom

    return str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).StudyInstanceUID)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--stable-age", type=int, default=2, help="Orthanc StableAge, s (Orthanc's default is 60)")
    ap.add_argument("--poll", type=float, default=1.0, help="PACS watcher poll interval, s")
    ap.add_argument("--runner-poll", type=int, default=2, help="PREFECT_RUNNER_POLL_FREQUENCY of the served deployment, s")
    args = ap.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from mammoseg.events.pacs_watcher import PacsWatcher, study_event
    from mammoseg.orthanc_local import _free_port, local_orthanc
    from mammoseg.pacs import Pacs
    from mammoseg.serve import ensure_server, stop_server
    from mammoseg.settings import Settings
    from mammoseg.synth.pacs import publish_spot_model, synthetic_study

    work = Path(tempfile.mkdtemp(prefix="mammoseg-pacs-bench-"))
    key = "pacs-benchmark-key"
    os.environ["MAMMOSEG_PSEUDONYM_KEY"] = key
    store_url = str(work / "store")
    model_uri = publish_spot_model(store_url)
    t_start = time.monotonic()
    with local_orthanc(stable_age_s=args.stable_age) as orthanc:
        api, server = ensure_server(f"http://127.0.0.1:{_free_port()}/api", work, timeout_s=180)
        os.environ["PREFECT_API_URL"] = api
        from prefect.settings import PREFECT_API_URL, temporary_settings

        api_settings = temporary_settings(updates={PREFECT_API_URL: api})
        api_settings.__enter__()
        env = {**os.environ, "PYTHONPATH": str(REPO), "MAMMOSEG_PACS_URL": orthanc.pacs_url,
               "MAMMOSEG_STORE_URL": store_url, "MAMMOSEG_WORK_DIR": str(work / "work"),
               "PREFECT_RUNNER_POLL_FREQUENCY": str(args.runner_poll)}
        log = (work / "serve.log").open("wb")
        served = subprocess.Popen([sys.executable, "-c", SERVE], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()
        try:
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 180
                while True:
                    try:
                        dep = client.read_deployment_by_name("infer-on-arrival/infer-on-arrival")
                        if client.read_resource_related_automations(f"prefect.deployment.{dep.id}"):
                            break
                    except Exception:  # noqa: BLE001, S110 - not registered yet
                        pass
                    if time.monotonic() > deadline or served.poll() is not None:
                        raise SystemExit(f"the deployment was not served; see {work / 'serve.log'}")
                    time.sleep(0.5)
            settings = Settings(pacs_page_size=100)
            pacs = Pacs(orthanc.pacs_url, settings)
            watcher = PacsWatcher(pacs, name="bench", pseudonym_key=key, state_file=work / "watch.json",
                                  emit=lambda *a, **kw: _post_event(api, *a, **kw))
            watcher.poll_once()  # baseline
            threading.Thread(target=watcher.run, args=(args.poll, stop), daemon=True).start()
            time.sleep(5)  # let the automation reach the server's trigger cache

            latencies, studies, arrivals = [], [], []
            for i in range(args.studies):
                blobs = synthetic_study(1000 + i, tag="bench")
                study = _study_uid(blobs[0])
                for b in blobs:
                    pacs.store(b)
                t0 = time.monotonic()
                arrivals.append(datetime.now(UTC))
                while not any(m == "SEG" for _, m in pacs.series(study)):
                    if time.monotonic() - t0 > 300:
                        raise SystemExit(f"no SEG for study {i} after 300 s; see {work / 'serve.log'}")
                    time.sleep(0.2)
                latencies.append(time.monotonic() - t0)
                studies.append(study)
                print(f"study {i + 1:2d}: SEG stored {latencies[-1]:.2f} s after arrival", flush=True)

            # re-announce every study (new event ids), and run one study's flow again by hand
            orthanc_ids = {}
            for oid in {c.resource_id for c in pacs.changes(0, limit=10000).changes if c.resource_type == "Study"}:
                if pacs.study_has_images(oid):  # not the pseudonymous SEGs' own Orthanc studies
                    orthanc_ids[pacs.study_uid(oid)] = oid
            from flows.deployments import PACS_DEBOUNCE_S

            reannounced_at = datetime.now(UTC)
            older = sum(1 for a in arrivals if (reannounced_at - a).total_seconds() > PACS_DEBOUNCE_S)
            for n, study in enumerate(studies):
                name, resource, payload, _ = study_event(orthanc.pacs_url, orthanc_ids[study], 10**9 + n,
                                                         key=key, event_time=datetime.now(UTC))
                _post_event(api, name, resource, payload=payload, occurred=datetime.now(UTC), id=uuid.uuid4())
            from flows.infer_on_arrival import infer_on_arrival_flow

            again = infer_on_arrival_flow(orthanc_study=orthanc_ids[studies[0]], pacs_url=orthanc.pacs_url,
                                          store_url=store_url, model_uri=model_uri)
            time.sleep(20)  # time for the trigger to act on the re-announcements
            with get_client(sync_client=True) as client:  # then wait until every run is final
                deadline = time.monotonic() + 900
                while True:
                    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
                    if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                        break
                    time.sleep(2)
            import json

            from mammoseg.storage import open_store

            reports = [json.loads(open_store(store_url).read_bytes(i.key)) for i in open_store(store_url).list("runs/")
                       if i.key.endswith("report-infer.json")]
            seg_counts = [sum(1 for _, m in pacs.series(s) if m == "SEG") for s in studies]

            # where the time goes: arrival → run created (watcher + StableAge + trigger),
            # created → running (runner poll + process start), running → completed (the flow)
            auto = sorted((r for r in runs if r.start_time and r.end_time), key=lambda r: r.created)[: len(arrivals)]
            phases = {"arrival -> run created": [], "created -> running": [], "running -> completed": []}
            for arrived, run in zip(arrivals, auto, strict=False):
                phases["arrival -> run created"].append((run.created - arrived).total_seconds())
                phases["created -> running"].append((run.start_time - run.created).total_seconds())
                phases["running -> completed"].append((run.end_time - run.start_time).total_seconds())
            states = sorted({str(r.state_name) for r in runs})

            print()
            print(f"machine: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; Orthanc StableAge {args.stable_age} s; watcher poll "
                  f"{args.poll:g} s; runner poll {args.runner_poll} s; model: known-answer 1-layer, 32 px plan")
            print(f"arrival -> SEG stored over {len(latencies)} studies (1 image of 150x100 each): "
                  f"median {statistics.median(latencies):.2f} s, min {min(latencies):.2f} s, max {max(latencies):.2f} s")
            print("median per phase: " + "; ".join(f"{k} {statistics.median(v):.2f} s" for k, v in phases.items() if v))
            print(f"re-announced {len(studies)} studies (new event ids; trigger window {PACS_DEBOUNCE_S} s, "
                  f"{older} of them first announced longer ago than that) + 1 manual "
                  f"re-run: deployment flow runs {len(runs)} (states {', '.join(states)}); manual re-run segmented "
                  f"{again.segmented}, already segmented {again.already_segmented}")
            print(f"all {len(reports)} run reports: images segmented {sum(r['segmented'] for r in reports)}, "
                  f"already segmented (nothing stored) {sum(r['already_segmented'] for r in reports)}; runs that stored "
                  f"nothing {sum(1 for r in reports if r['segmented'] == 0)}; SEG series per study {seg_counts} "
                  f"-> second SEGs: {sum(c - 1 for c in seg_counts)}")
            print(f"total {time.monotonic() - t_start:.0f} s")
        finally:
            stop.set()
            served.terminate()
            try:
                served.wait(timeout=30)
            except subprocess.TimeoutExpired:
                served.kill()
            log.close()
            api_settings.__exit__(None, None, None)
            stop_server(server)


if __name__ == "__main__":
    main()
