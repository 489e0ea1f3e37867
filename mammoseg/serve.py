"""``mammoseg serve``: a Prefect server (found or started), the deployments, the store watcher.

The server part needs nothing from Prefect in this process: it probes ``<api>/health`` over
HTTP and, when nothing answers on a local address, starts ``prefect server start`` as a child
process with its own SQLite database under ``<work_dir>/prefect``. Prefect itself is imported
only by :func:`run_service`, after ``PREFECT_API_URL`` is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mammoseg.settings import Settings

if TYPE_CHECKING:
    from mammoseg.links import FileServer

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::1"})
_CLIENT_ONLY_ENV = frozenset({"PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_HOME", "PREFECT_PROFILES_PATH"})


class ServerUnavailable(RuntimeError):
    """No Prefect server answers at the configured URL and none can be started there."""


def server_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET <api_url>/health`` answers 200 (``api_url`` ends in ``/api``)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ui_url(api_url: str) -> str:
    """The UI address of an API URL: ``http://h:p/api`` → ``http://h:p``."""
    url = api_url.rstrip("/")
    return url.removesuffix("/api")


def ensure_server(
    api_url: str | None, work_dir: Path, *, timeout_s: float = 120.0
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """A Prefect API URL that answers, and the server process when this call started one.

    * ``api_url`` answers → it, ``None`` (nothing started);
    * ``api_url`` is unset → :data:`DEFAULT_API_URL`, started if nothing answers there;
    * ``api_url`` is on a local host and silent → a server started on its host and port;
    * otherwise → :class:`ServerUnavailable`.

    A started server keeps its state (SQLite) and log in ``<work_dir>/prefect``. The caller owns
    the process: stop it with :func:`stop_server`.
    """
    url = (api_url or DEFAULT_API_URL).rstrip("/")
    if server_healthy(url):
        return url, None
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS or parts.port is None:
        raise ServerUnavailable(
            f"the Prefect server at {url} does not answer on /health, and it is not a local "
            "http://host:port address that mammoseg could start a server on"
        )
    home = Path(work_dir).resolve() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    # Our own home and database; keep the user's other PREFECT_SERVER_* tuning.
    env = {
        k: v for k, v in os.environ.items()
        if k not in _CLIENT_ONLY_ENV and not k.startswith(("PREFECT_API_DATABASE", "PREFECT_SERVER_DATABASE"))
    }
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": url,
    }
    log = open(home / "server.log", "ab")  # noqa: SIM115 - handed to the child, closed on stop
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start",
         "--host", parts.hostname, "--port", str(parts.port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
        # Own process group: a terminal Ctrl-C reaches only `mammoseg serve`, which stops the
        # runner first (it still talks to the server) and then this server.
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server_healthy(url):
            return url, proc
        if proc.poll() is not None:
            raise ServerUnavailable(
                f"prefect server exited with code {proc.returncode} at start-up; see {home / 'server.log'}"
            )
        time.sleep(0.5)
    stop_server(proc)
    raise ServerUnavailable(f"prefect server did not answer on {url}/health within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """Terminate a server started by :func:`ensure_server` (no-op for ``None``)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def _start_watcher(settings: Settings, stop: threading.Event, interval_s: float) -> threading.Thread | None:
    """The polling watcher of the training root in a daemon thread; None when none is set."""
    from mammoseg.events import Watcher

    try:
        watcher = Watcher.from_settings(settings)
    except ValueError as exc:
        print(f"mammoseg serve: not watching the store ({exc})", file=sys.stderr)
        return None
    thread = threading.Thread(
        target=watcher.run, kwargs={"interval_s": interval_s, "stop_event": stop},
        name="mammoseg-watcher", daemon=True,
    )
    thread.start()
    print(f"mammoseg serve: watching {settings.retrain_source_url} every {interval_s:.0f} s", file=sys.stderr)
    return thread


def start_file_server(settings: Settings) -> FileServer | None:
    """For a local store: the loopback file server of its run outputs and models, its URL in
    ``MAMMOSEG_FILES_URL`` (the served flow runs inherit it), so UI artifacts show pictures and
    links that open. None for an S3 store (presigned URLs), when ``MAMMOSEG_FILES_URL`` is
    already set, or when the port is taken (a warning; artifacts then show plain URIs)."""
    from mammoseg.links import FileServer

    if settings.store_url.startswith("s3://") or settings.files_url:
        return None
    from mammoseg.storage import LocalStore, open_store

    store = open_store(settings.store_url, settings)
    if not isinstance(store, LocalStore):
        return None
    store.root.mkdir(parents=True, exist_ok=True)
    try:
        files = FileServer(store.root, port=settings.files_port).start()
    except OSError as exc:
        print(f"mammoseg serve: no file server on port {settings.files_port} ({exc}); "
              "artifacts will show store paths, not links", file=sys.stderr)
        return None
    os.environ["MAMMOSEG_FILES_URL"] = files.url
    print(f"mammoseg serve: run outputs and models at {files.url} (for the UI's pictures and links)", file=sys.stderr)
    return files


def _start_pacs_watcher(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """Poll the PACS's changes feed (``MAMMOSEG_PACS_URL``) for `infer-on-arrival`; state in
    the pipeline store at ``watch/pacs.json``. None when no PACS is configured."""
    if not settings.pacs_url:
        return None
    from mammoseg.events.pacs_watcher import PacsWatcher
    from mammoseg.pacs import Pacs
    from mammoseg.settings import require_pseudonym_key

    watcher = PacsWatcher(Pacs(settings.pacs_url, settings), name="pacs", pseudonym_key=require_pseudonym_key(settings),
                          state_store_url=settings.store_url, settings=settings)
    thread = threading.Thread(target=watcher.run, kwargs={"interval_s": settings.pacs_poll_s, "stop_event": stop},
                              name="mammoseg-pacs-watcher", daemon=True)
    thread.start()
    print(f"mammoseg serve: watching the PACS {watcher.pacs.address.url} every {settings.pacs_poll_s:g} s", file=sys.stderr)
    return thread


def run_service(
    settings: Settings, *, api_url: str | None = None, watch: bool = True, watch_interval_s: float = 30.0
) -> None:
    """Find or start the server, register and serve the deployments; blocks until Ctrl-C.

    Everything this call started (the server process, the watcher thread) is stopped on exit.
    """
    url, proc = ensure_server(api_url or os.environ.get("PREFECT_API_URL"), settings.work_dir)
    os.environ["PREFECT_API_URL"] = url
    stop = threading.Event()
    watcher: threading.Thread | None = None
    files = start_file_server(settings)
    try:
        print(f"mammoseg serve: Prefect UI at {ui_url(url)}"
              + (" (server started by mammoseg)" if proc else ""), file=sys.stderr)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.deployments import build_deployments, serve_deployments

        def registered() -> None:
            nonlocal watcher
            if watch:
                watcher = _start_watcher(settings, stop, watch_interval_s)
            _start_pacs_watcher(settings, stop)  # issue 10: only with MAMMOSEG_PACS_URL (daemon thread)

        with temporary_settings(updates={PREFECT_API_URL: url}):
            from flows.new_data import ensure_retrain_limit

            ensure_retrain_limit()
            serve_deployments(build_deployments(settings), on_registered=registered)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=10)
        if files is not None:
            files.stop()
        stop_server(proc)
        print("mammoseg serve: stopped", file=sys.stderr)
