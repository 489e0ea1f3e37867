"""A throw-away local Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) for tests and benchmarks.

:func:`local_orthanc` writes a JSON configuration into a temporary folder (HTTP and DICOM ports
free on loopback, storage and index in that folder, the DICOMweb plugin enabled at
``/dicom-web/``, remote access off, no authentication — acceptable only because it listens on
loopback), starts ``/usr/sbin/Orthanc CONFIG``, waits until it answers, and stops it on exit.
``StableAge`` (seconds without a new instance before Orthanc calls a study stable) is short so
that tests do not wait a minute.

Not used by the pipeline itself; production points ``MAMMOSEG_PACS_URL`` at a real PACS (the
docker-compose stack's Orthanc, with credentials).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ORTHANC: Final = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN: Final = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancUnavailable(RuntimeError):
    """No Orthanc binary / DICOMweb plugin here, or it did not start; the message says which."""


@dataclass(frozen=True)
class LocalOrthanc:
    http_port: int
    dicom_port: int
    folder: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pacs_url(self) -> str:
        """The pipeline's name for it: ``dicomweb://127.0.0.1:<port>/dicom-web``."""
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web"


def missing() -> str | None:
    """Why a local Orthanc cannot run here, or None."""
    if not ORTHANC.is_file():
        return f"{ORTHANC} not installed (apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return f"{DICOMWEB_PLUGIN} not installed (apt-get install orthanc-dicomweb)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(folder: Path, http_port: int, dicom_port: int, stable_age_s: int) -> dict[str, object]:
    return {
        "Name": "mammoseg-test",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StableAge": stable_age_s,
        "HttpTimeout": 30,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }


@contextmanager
def local_orthanc(stable_age_s: int = 1, timeout_s: float = 60.0) -> Iterator[LocalOrthanc]:
    """Start a local Orthanc; :class:`OrthancUnavailable` if it cannot run here."""
    import requests

    why = missing()
    if why:
        raise OrthancUnavailable(why)
    folder = Path(tempfile.mkdtemp(prefix="mammoseg-orthanc-"))
    http_port, dicom_port = _free_port(), _free_port()
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config(folder, http_port, dicom_port, stable_age_s), indent=1))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([str(ORTHANC), str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "LANG": "C"})
    server = LocalOrthanc(http_port, dicom_port, folder)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise OrthancUnavailable(f"Orthanc exited with {proc.returncode}; see {folder / 'orthanc.log'}")
            try:
                if requests.get(server.rest_url + "/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise OrthancUnavailable(f"Orthanc did not answer within {timeout_s:.0f} s")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
