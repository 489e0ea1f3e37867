"""Shared fixtures: a real S3-compatible server over HTTP, stores, the real-data folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

# Tests must never touch a user's real AWS account or Prefect server.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs need a private pseudonym key (no public default); tests use a fixed one. Tests of
    the missing-key error delete it."""
    monkeypatch.setenv("MAMMOSEG_PSEUDONYM_KEY", "test-pseudonym-key")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public datasets); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see DEVELOPERS.md: ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3-compatible server as a separate process; yield its endpoint URL."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("moto server exited at start-up")
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start within 30 s")
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point mammoseg's settings at the local S3 server through the environment."""
    monkeypatch.setenv("MAMMOSEG_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("MAMMOSEG_S3_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("MAMMOSEG_S3_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MAMMOSEG_S3_REGION", "us-east-1")
    return s3_server


@pytest.fixture()
def s3_bucket(s3_env: str) -> str:
    """A fresh, empty bucket on the local S3 server; returns its name."""
    from mammoseg.settings import get_settings
    from mammoseg.storage import make_s3_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    make_s3_client(get_settings()).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for the whole session; never nest another."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
