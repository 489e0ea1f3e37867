"""URLs a browser can open for objects of the store: what the Prefect UI's artifacts link to.

* ``s3://`` objects: a presigned GET URL (boto3, the store's endpoint), valid
  ``settings.link_expiry_s``;
* objects of a local store: ``<settings.files_url>/<key>``, served by :class:`FileServer`, the
  loopback file server ``mammoseg serve`` runs beside the Prefect server; without one (a run
  outside ``mammoseg serve``) there is no URL and artifacts show the plain URI.

Only run outputs and published models are served (:data:`SERVED_PREFIXES`): the store may also
hold source data, whose object names can carry patient IDs.
"""

from __future__ import annotations

import http.server
import re
import threading
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Self

from mammoseg.settings import Settings

#: Key prefixes the file server serves (run outputs and published models: pseudonymous names).
SERVED_PREFIXES = ("runs/", "models/")


def browser_url(uri: str | None, settings: Settings) -> str | None:
    """An http(s) URL for ``uri`` a browser on this machine can open, or None when there is none."""
    if not uri:
        return None
    if uri.startswith("s3://"):
        return _presigned(uri, settings)
    if uri.startswith("file://") and settings.files_url:
        from mammoseg.storage import StoreError, open_store

        store = open_store(settings.store_url, settings)
        try:
            key = store.key_from_uri(uri)
        except StoreError:
            return None  # not in the served store
        if not key.startswith(SERVED_PREFIXES):
            return None
        return f"{settings.files_url.rstrip('/')}/{urllib.parse.quote(key)}"
    return None


def _presigned(uri: str, settings: Settings) -> str:
    from mammoseg.storage import make_s3_client

    bucket, _, key = uri[len("s3://"):].partition("/")
    if settings.s3_browser_endpoint_url:  # signed for the host the browser sends (SigV4 signs it)
        settings = settings.model_copy(update={"s3_endpoint_url": settings.s3_browser_endpoint_url})
    return make_s3_client(settings).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.link_expiry_s
    )


def artifact_key(text: str) -> str:
    """A Prefect artifact key from a name: lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


def md_link(text: str, uri: str | None, settings: Settings) -> str:
    """``[text](url)`` when ``uri`` has a browser URL, else ``text: `uri```."""
    url = browser_url(uri, settings)
    if url:
        return f"[{text}]({url})"
    return f"{text}: `{uri}`" if uri else text


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files under :data:`SERVED_PREFIXES` only; no directory listings; quiet."""

    def send_head(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if not path.startswith(SERVED_PREFIXES) or path.endswith("/") or ".." in path.split("/"):
            self.send_error(404, "not served")
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(404, "not served")

    def log_message(self, format: str, *args: object) -> None:
        pass


class FileServer:
    """A loopback HTTP server of a local store's run outputs and models, in a daemon thread.

    ``with FileServer(root, port=0) as fs: fs.url`` → ``http://127.0.0.1:<port>``.
    """

    def __init__(self, root: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).expanduser().resolve()
        handler = partial(_Handler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name="mammoseg-files", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
