"""The Prefect UI, as a user meets it: a tiny retrain against a REAL ``prefect server start``
(started the way ``mammoseg serve`` starts it, on a free port, so the UI must be told its API
URL), then every page of the run opened in headless Chromium (Debian's ``/usr/bin/chromium``
through Playwright).

Checks: the flow-run page, its Task Runs tab (as many rows as the API has task runs), one
task-run page per task (none blank, no ``Invalid TaskInputResponse``), the run's artifacts
(the summary, per-dataset reports, metrics per set, an overlay image the browser loads from
the local store's file server), and a quarantined case visible as such in the run lists.
Screenshots go to ``$MAMMOSEG_UI_SHOTS`` (default ``/tmp/ui-shots``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = Path(os.environ.get("MAMMOSEG_UI_SHOTS", "/tmp/ui-shots"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Server + file server + one tiny retrain (with defective cases); what the pages need."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (.ci/run installs Debian's chromium)")
    pytest.importorskip("playwright")
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.retrain import retrain_flow
    from mammoseg.layout import new_run_id
    from mammoseg.links import FileServer
    from mammoseg.params import DatasetSource, RetrainParams
    from mammoseg.serve import ensure_server, stop_server
    from tasks.synth import synthesize

    work = tmp_path_factory.mktemp("ui-work")
    store_root = work / "store"
    store_root.mkdir()
    api, proc = ensure_server(f"http://127.0.0.1:{_free_port()}/api", work, timeout_s=150)
    files = FileServer(store_root).start()
    env = {"MAMMOSEG_FILES_URL": files.url, "MAMMOSEG_STORE_URL": store_root.as_uri(),
           "MAMMOSEG_WORK_DIR": str(work / "scratch"), "MAMMOSEG_PSEUDONYM_KEY": "ui-test-key"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            store_url = store_root.as_uri()
            data = synthesize(store_url=store_url, patients=6, height=128, width=96, mias_images=4, mias_size=64,
                              bad=2, seed=3)  # fmt: skip
            run_id = new_run_id()
            # Prefect keeps one events worker per process, bound to the API URL it was created
            # under (an earlier test's server): drain it so this run's events (task runs are
            # recorded from them) go to this server, and again after, so they have all arrived
            EventsWorker.drain_all(timeout=60)
            tiny = RetrainParams(size=64, base_filters=4, depth=2, epochs=2, batch_size=4, n_boot=100,
                                 early_stopping_patience=2)  # fmt: skip
            state = retrain_flow(
                [DatasetSource(dataset="cbis-ddsm", source_url=data["cbis_source_url"])],
                [DatasetSource(dataset="mini-mias", source_url=data["mias_source_url"])],
                store_url, run_id, tiny, return_state=True,
            )
            assert state.is_completed(), state
            EventsWorker.drain_all(timeout=120)
            _wait_task_runs_recorded(state.state_details.flow_run_id)
            yield {"api": api, "ui": api.removesuffix("/api"), "run_id": run_id,
                   "flow_run_id": state.state_details.flow_run_id, "files": files.url}  # fmt: skip
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        files.stop()
        stop_server(proc)


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _task_runs(flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as c:
        return c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _wait_task_runs_recorded(flow_run_id, timeout_s: float = 120.0) -> None:
    """The server records task runs from their events, asynchronously: wait until the count of
    a run's task runs is non-zero and has stopped changing."""
    deadline, last = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        n = len(_task_runs(flow_run_id))
        if n and n == last:
            return
        last = n
        time.sleep(2)
    raise AssertionError(f"the server recorded {last} task runs of the retrain within {timeout_s:.0f} s")


def _all_flow_runs() -> list:
    with _client() as c:
        return c.read_flow_runs()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page with its console errors recorded."""

    def __init__(self, browser: Any, base: str) -> None:
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.ctx.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: self.errors.append(f"{r.status} {r.url} (on {self.page.url})")
                     if r.status >= 400 else None)

    def open(self, path: str, wait_text: str | None = None) -> Any:
        self.page.goto(self.base + path, wait_until="networkidle", timeout=60_000)
        if wait_text:
            self.page.get_by_text(wait_text, exact=False).first.wait_for(timeout=30_000)
        return self.page

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.ctx.close()


def test_every_page_of_a_retrain_run_renders(ui_run: dict[str, Any], browser: Any) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    fr_id = ui_run["flow_run_id"]
    tasks = _task_runs(fr_id)
    runs = _all_flow_runs()
    # no task input of a type the default UI cannot draw, in any run of the retrain
    for run in runs:
        for tr in _task_runs(run.id):
            kinds = {i.input_type for inputs in tr.task_inputs.values() for i in inputs}
            assert "flow_run" not in kinds, f"{run.name}/{tr.name}: {tr.task_inputs}"
    page = Page(browser, ui_run["ui"])
    t0 = time.monotonic()
    try:
        # the flow-run page (the UI found its API on this port: no "Can't connect")
        p = page.open(f"/runs/flow-run/{fr_id}", wait_text=f"retrain-{ui_run['run_id']}")
        assert "Can't connect" not in p.content()
        page.shot("01-retrain-run")

        # the Task Runs tab lists every task run of the run (subflows are their own runs)
        real = [t for t in tasks if not _is_subflow_wrapper(t, runs)]
        assert f"{len(real)} Task runs" in p.inner_text("body")
        _tab(p, "Task Runs")
        p.get_by_text(real[0].name, exact=False).first.wait_for(timeout=30_000)
        time.sleep(1)
        html = p.content()
        assert "No task runs" not in html
        missing = [t.name for t in real if t.name not in html]
        assert not missing, f"task runs not listed: {missing}"
        page.shot("02-retrain-task-runs")

        # one task-run page of each task: each shows its name and its own content
        for t in real:
            p = page.open(f"/runs/task-run/{t.id}", wait_text=t.name)
            body = p.inner_text("main") if p.locator("main").count() else p.inner_text("body")
            assert t.name in body and len(body.strip()) > 200, f"task page of {t.name} is blank: {body[:200]!r}"
        train = next(t for t in real if t.name.startswith("train-unet"))
        p = page.open(f"/runs/task-run/{train.id}", wait_text=train.name)
        _tab(p, "Artifacts")
        p.get_by_text("training-epochs", exact=False).first.wait_for(timeout=30_000)
        page.shot("03-train-unet-task-artifacts")
        assert not [e for e in page.errors if "TaskInputResponse" in e], page.errors

        # artifacts of the run: the summary, a report per dataset, metrics per evaluated set
        with _client() as c:
            arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[fr_id])))
        keys = {a.key for a in arts}
        assert {"retrain-summary", "retrain-report-train-cbis-ddsm", "retrain-report-heldout-mini-mias",
                "metrics-heldout-mini-mias", "training-epochs", "training-progress"} <= keys, keys  # fmt: skip
        assert any(k and k.startswith("metrics-internal-test-") for k in keys), keys
        p = page.open(f"/runs/flow-run/{fr_id}")
        _tab(p, "Artifacts")
        p.get_by_text("retrain-summary", exact=False).first.wait_for(timeout=30_000)
        # the run's own artifacts are flow-run artifacts (the tab's "Flow run" section is not empty)
        assert {a.key for a in arts if a.task_run_id is None} >= {"retrain-summary", "retrain-report-train-cbis-ddsm"}
        assert not re.search(r"Flow run\s+None", p.inner_text("body")), p.inner_text("body")[:500]
        page.shot("04-retrain-artifacts")

        # the summary page: links that open (http URLs of the file server)
        summary = next(a for a in arts if a.key == "retrain-summary")
        p = page.open(f"/artifacts/artifact/{summary.id}", wait_text="Evaluated sets")
        hrefs = [a.get_attribute("href") or "" for a in p.locator("a").all()]
        served = [h for h in hrefs if h.startswith(ui_run["files"])]
        assert served, hrefs
        page.shot("05-retrain-summary")
        import urllib.request

        with urllib.request.urlopen(served[0], timeout=10) as resp:
            assert resp.status == 200

        # an overlay shown in the UI: the image artifact's <img> is loaded by the browser
        overlay = next(a for a in arts if a.key == "overlays-heldout-mini-mias")
        p = page.open(f"/artifacts/artifact/{overlay.id}")
        img = p.locator(f"img[src^='{ui_run['files']}']").first
        img.wait_for(timeout=30_000)
        p.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
        page.shot("06-overlay-artifact")

        # the metrics of a set, its overlay embedded in the Markdown
        metrics = next(a for a in arts if a.key == "metrics-heldout-mini-mias")
        p = page.open(f"/artifacts/artifact/{metrics.id}", wait_text="Dice, mean per image")
        embedded = p.locator(f"img[src^='{ui_run['files']}']").first
        embedded.wait_for(timeout=30_000)
        embedded.scroll_into_view_if_needed()
        p.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=embedded.element_handle(), timeout=30_000)
        page.shot("09-metrics-heldout-overlay-in-markdown", full_page=False)
        curves = next(a for a in arts if a.key == "training-curves")
        p = page.open(f"/artifacts/artifact/{curves.id}")
        p.locator(f"img[src^='{ui_run['files']}']").first.wait_for(timeout=30_000)
        page.shot("10-training-curves")
        # the epoch table, updated in place: one artifact with every epoch
        epochs = [a for a in arts if a.key == "training-epochs"]
        assert len(epochs) == 1 and "Training: epoch 2 of 2" in epochs[0].data, epochs
        p = page.open(f"/artifacts/artifact/{epochs[0].id}", wait_text="Best validation Dice so far")
        page.shot("11-training-epochs")

        # a quarantined case as it appears in the run list: state names say so
        quarantined = [r for r in runs if r.state and r.state.name == "Quarantined"]
        assert quarantined, [(r.name, r.state.name) for r in runs]
        p = page.open("/runs")
        p.locator("input[placeholder='Search by flow run name']:visible").first.fill("cbis-ddsm")
        p.get_by_text("Quarantined", exact=False).first.wait_for(timeout=30_000)
        time.sleep(1.5)  # the list's debounced search
        page.shot("07-runs-list-quarantined")
        _tab(p, "Task runs")
        p.locator("input[placeholder='Search by task run name']:visible").first.fill("preprocess-cs")
        time.sleep(1.5)
        p.get_by_text("Quarantined", exact=False).first.wait_for(timeout=30_000)
        page.shot("08-task-runs-list-quarantined")
        assert not [e for e in page.errors if "TaskInputResponse" in e], page.errors
        # nothing the pages asked for failed (the UI's API calls and the pictures' URLs)
        # (but /ico/undefined.svg: an icon the UI's own run graph asks for, whatever the run)
        failed = [e for e in page.errors if re.match(r"^\d{3} http", e) and "/ico/undefined.svg" not in e]
        assert not failed, failed
    except Exception:
        page.shot("failed-here")
        raise
    finally:
        print(f"\n[ui] pages checked in {time.monotonic() - t0:.1f} s; screenshots in {SHOTS}")
        print("[ui] console errors:", page.errors[:10])
        page.close()


def _tab(p: Any, name: str) -> None:
    """Open a tab of a page by its label."""
    p.get_by_text(name, exact=True).first.click()
    p.wait_for_load_state("networkidle")


def _is_subflow_wrapper(task_run: Any, runs: list) -> bool:
    """A subflow's parent task run (the UI lists the subflow, not this)."""
    return any(r.parent_task_run_id == task_run.id for r in runs)
