"""A PACS as a source and a sink: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) and Orthanc's changes feed.

A PACS is named like a bucket: ``dicomweb://host:port/dicom-web`` (plain HTTP) or
``dicomwebs://host:port/dicom-web`` (HTTPS). Credentials never go in the URL: they come from
the settings (``MAMMOSEG_PACS_USERNAME`` / ``MAMMOSEG_PACS_PASSWORD``, HTTP basic auth).

:class:`Pacs` wraps :class:`dicomweb_client.DICOMwebClient`:

* :meth:`Pacs.studies` — QIDO-RS, paged (``offset``/``limit`` of ``pacs_page_size``);
* :meth:`Pacs.image_series` — the study's series that hold images (never our own SEG, nor
  SR/PR/KO documents), so only the needed series are fetched;
* :meth:`Pacs.instances` / :meth:`Pacs.retrieve` — WADO-RS of one instance, as Part-10 bytes;
* :meth:`Pacs.store` — STOW-RS of Part-10 bytes (the SEG results);
* :meth:`Pacs.has_series` — QIDO-RS: is a series (our deterministic SEG series) already there?

Orthanc's REST API (same host and port, without the ``/dicom-web`` root) gives the *changes
feed* (:meth:`Pacs.changes`), which :mod:`mammoseg.events.pacs_watcher` polls for
``StableStudy`` — Orthanc's own per-study debounce (no new instance for ``StableAge`` seconds).

Errors: a connection failure, a timeout or an HTTP 5xx/429 is a :class:`PacsUnavailable`
(a :class:`ConnectionError`, so the pipeline's retry policy retries it); any other HTTP error
is a :class:`PacsError` (one line, no UIDs). Nothing is imported or opened at import time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from mammoseg.storage import ObjectInfo, ObjectNotFound, ObjectStore, StoreError

if TYPE_CHECKING:
    from mammoseg.settings import Settings

SCHEMES: Final = {"dicomweb": "http", "dicomwebs": "https"}
#: Modalities of series that are not images to segment (results and documents).
NON_IMAGE_MODALITIES: Final = frozenset({"SEG", "SR", "PR", "KO", "RTSTRUCT", "DOC", "OT-SEG"})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# DICOM JSON tags
STUDY_UID: Final = "0020000D"
SERIES_UID: Final = "0020000E"
SOP_UID: Final = "00080018"
MODALITY: Final = "00080060"


class PacsError(ValueError):
    """A PACS URL or answer that cannot be used (not transient); one line."""


class PacsUnavailable(ConnectionError):
    """The PACS did not answer, timed out, or answered 5xx/429: retry later."""


@dataclass(frozen=True)
class PacsAddress:
    """``dicomweb://host:port/root`` split into the DICOMweb base URL and Orthanc's REST root."""

    url: str  # as given, normalised (no trailing slash)
    dicomweb_url: str  # http(s)://host:port/root
    rest_url: str  # http(s)://host:port  (Orthanc REST API)


def is_pacs_url(url: str) -> bool:
    return str(url).split("://", 1)[0] in SCHEMES and "://" in str(url)


def parse_pacs_url(url: str) -> PacsAddress:
    """Split a ``dicomweb://`` / ``dicomwebs://`` URL; :class:`PacsError` for anything else."""
    text = str(url).strip()
    scheme, sep, _ = text.partition("://")
    if not sep or scheme not in SCHEMES:
        raise PacsError("a PACS URL must start with dicomweb:// or dicomwebs://")
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise PacsError("credentials do not belong in the PACS URL: set MAMMOSEG_PACS_USERNAME / MAMMOSEG_PACS_PASSWORD")
    if not parts.hostname:
        raise PacsError("the PACS URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise PacsError("the PACS URL has an invalid port") from None
    if parts.query or parts.fragment:
        raise PacsError("the PACS URL must not carry a query or fragment")
    netloc = parts.hostname + (f":{port}" if port else "")
    root = parts.path.rstrip("/")
    http = SCHEMES[scheme]
    return PacsAddress(
        url=f"{scheme}://{netloc}{root}",
        dicomweb_url=f"{http}://{netloc}{root}",
        rest_url=f"{http}://{netloc}",
    )


def check_uid(uid: str) -> str:
    """A syntactically valid DICOM UID (digits and dots, <= 64 chars); :class:`PacsError` else."""
    if not isinstance(uid, str) or not uid or len(uid) > 64 or not _UID.match(uid):
        raise PacsError("not a valid DICOM UID")
    return uid


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = (item.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def _check_orthanc_id(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", value):
        raise PacsError("not an Orthanc study id")
    return value


@dataclass(frozen=True)
class Change:
    """One entry of Orthanc's changes feed."""

    seq: int
    change_type: str  # StableStudy, NewInstance, …
    resource_type: str  # Study, Series, Instance, Patient
    resource_id: str  # Orthanc's id (a hash, not a DICOM UID)


@dataclass(frozen=True)
class ChangesPage:
    changes: tuple[Change, ...]
    last: int
    done: bool


class Pacs:
    """One PACS reached over DICOMweb (and Orthanc's REST API for the changes feed)."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        from mammoseg.settings import get_settings

        self.settings = settings or get_settings()
        self.address = parse_pacs_url(url)
        self.page_size = int(self.settings.pacs_page_size)
        self._client: Any = None
        self._session: Any = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            session = requests.Session()
            user = self.settings.pacs_username
            password = self.settings.pacs_password
            if user:
                session.auth = (user, password.get_secret_value() if password else "")
            self._session = session
        return self._session

    @property
    def client(self) -> Any:
        if self._client is None:
            from dicomweb_client import DICOMwebClient

            self._client = DICOMwebClient(
                self.address.dicomweb_url, session=self.session, timeout=self.settings.pacs_timeout_s
            )
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one request; translate requests' errors into PacsUnavailable / PacsError."""
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(f"PACS {self.address.url} unreachable during {what} ({type(exc).__name__})") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status is None or status >= 500 or status == 429:
                raise PacsUnavailable(f"PACS {self.address.url} answered {status} to {what}") from None
            if status in (401, 403):
                raise PacsError(f"PACS {self.address.url} refused {what} ({status}): check MAMMOSEG_PACS_USERNAME/PASSWORD") from None
            raise PacsError(f"PACS {self.address.url} answered {status} to {what}") from None

    def _rest_get(self, path: str, **params: Any) -> Any:
        def get() -> Any:
            response = self.session.get(self.address.rest_url + path, params=params, timeout=self.settings.pacs_timeout_s)
            response.raise_for_status()
            return response.json()

        return self._call(f"GET {path.split('?')[0].rsplit('/', 1)[0] or path}", get)

    # -- QIDO-RS ----------------------------------------------------------------------------
    def studies(self, **filters: Any) -> Iterator[str]:
        """Study Instance UIDs, paged by ``pacs_page_size`` (QIDO-RS ``offset``/``limit``)."""
        offset = 0
        while True:
            page = self._call("QIDO-RS studies", self.client.search_for_studies, offset=offset, limit=self.page_size,
                              fields=[STUDY_UID], search_filters=filters or None)
            for item in page:
                uid = _value(item, STUDY_UID)
                if uid:
                    yield uid
            if len(page) < self.page_size:
                return
            offset += len(page)

    def series(self, study_uid: str) -> list[tuple[str, str]]:
        """``(series UID, modality)`` of every series of a study (paged)."""
        check_uid(study_uid)
        out: list[tuple[str, str]] = []
        offset = 0
        while True:
            page = self._call("QIDO-RS series", self.client.search_for_series, study_instance_uid=study_uid,
                              offset=offset, limit=self.page_size, fields=[SERIES_UID, MODALITY])
            out += [(s, (_value(i, MODALITY) or "").upper()) for i in page if (s := _value(i, SERIES_UID))]
            if len(page) < self.page_size:
                return out
            offset += len(page)

    def image_series(self, study_uid: str) -> list[str]:
        """The study's series that hold images to segment (not SEG/SR/PR/KO results)."""
        return [uid for uid, modality in self.series(study_uid) if modality not in NON_IMAGE_MODALITIES]

    def has_series(self, study_uid: str, series_uid: str) -> bool:
        check_uid(series_uid)
        return any(uid == series_uid for uid, _ in self.series(study_uid))

    def instances(self, study_uid: str, series_uid: str) -> list[str]:
        """SOP Instance UIDs of one series (paged)."""
        check_uid(study_uid), check_uid(series_uid)
        out: list[str] = []
        offset = 0
        while True:
            page = self._call("QIDO-RS instances", self.client.search_for_instances, study_instance_uid=study_uid,
                              series_instance_uid=series_uid, offset=offset, limit=self.page_size, fields=[SOP_UID])
            out += [s for i in page if (s := _value(i, SOP_UID))]
            if len(page) < self.page_size:
                return out
            offset += len(page)

    # -- WADO-RS / STOW-RS ------------------------------------------------------------------
    def retrieve(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as DICOM Part-10 bytes (WADO-RS)."""
        from pydicom.filewriter import dcmwrite

        for uid in (study_uid, series_uid, sop_uid):
            check_uid(uid)
        ds = self._call("WADO-RS instance", self.client.retrieve_instance, study_uid, series_uid, sop_uid)
        buf = BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        return buf.getvalue()

    def store(self, data: bytes) -> None:
        """Store one Part-10 instance (STOW-RS); :class:`PacsError` if the PACS refuses it."""
        import pydicom

        ds = pydicom.dcmread(BytesIO(data))
        result = self._call("STOW-RS", self.client.store_instances, [ds])
        failed = result.get("00081198") if result is not None else None  # FailedSOPSequence
        if failed and failed.get("Value"):
            raise PacsError("the PACS refused the stored instance (FailedSOPSequence)")

    # -- Orthanc REST -----------------------------------------------------------------------
    def changes(self, since: int, limit: int | None = None) -> ChangesPage:
        """One page of Orthanc's changes feed after sequence number ``since``."""
        doc = self._rest_get("/changes", since=int(since), limit=int(limit or self.page_size))
        try:
            changes = tuple(
                Change(int(c["Seq"]), str(c["ChangeType"]), str(c["ResourceType"]), str(c["ID"]))
                for c in doc["Changes"]
            )
            return ChangesPage(changes=changes, last=int(doc["Last"]), done=bool(doc["Done"]))
        except (KeyError, TypeError, ValueError):
            raise PacsError("the PACS changes feed is not Orthanc's (/changes)") from None

    def last_change(self) -> int:
        """The current end of the changes feed (a watcher's baseline)."""
        doc = self._rest_get("/changes", last="")
        try:
            return int(doc["Last"])
        except (KeyError, TypeError, ValueError):
            raise PacsError("the PACS changes feed is not Orthanc's (/changes)") from None

    def study_has_images(self, orthanc_study_id: str) -> bool:
        """Whether an Orthanc study holds a series to segment (not only SEG/SR/PR/KO results:
        a pseudonymous SEG is filed by Orthanc as a study of its own, which needs no run)."""
        _check_orthanc_id(orthanc_study_id)
        series = self._rest_get(f"/studies/{orthanc_study_id}/series")
        if not isinstance(series, list):
            raise PacsError("the PACS answered an unexpected series list")
        modalities = {str(((s or {}).get("MainDicomTags") or {}).get("Modality", "")).upper() for s in series}
        return bool(modalities - NON_IMAGE_MODALITIES)

    def study_uid(self, orthanc_study_id: str) -> str:
        """The Study Instance UID of an Orthanc study id (its REST resource)."""
        _check_orthanc_id(orthanc_study_id)
        doc = self._rest_get(f"/studies/{orthanc_study_id}")
        uid = ((doc or {}).get("MainDicomTags") or {}).get("StudyInstanceUID")
        if not uid:
            raise PacsError("the PACS study has no Study Instance UID")
        return check_uid(str(uid))


# ----------------------------------------------------------------------------------------------
# a PACS as a (read-only) store: ``open_store("dicomweb://…")``
# ----------------------------------------------------------------------------------------------


def split_store_url(url: str) -> tuple[str, str]:
    """``dicomweb://h:p/root/<study>/<series>`` → (``dicomweb://h:p/root``, ``<study>/<series>``):
    trailing UID segments of the path are a key prefix inside the PACS."""
    text = str(url).rstrip("/")
    scheme, _, rest = text.partition("://")
    host, _, path = rest.partition("/")
    segments = [s for s in path.split("/") if s]
    keys: list[str] = []
    while segments and _UID.match(segments[-1]) and len(keys) < 3:
        keys.insert(0, segments.pop())
    return f"{scheme}://{host}" + ("/" + "/".join(segments) if segments else ""), "/".join(keys)



class ReadOnlyStore(StoreError):
    """A PACS store is read-only for the pipeline (results go back with STOW-RS, not as keys)."""


class DicomWebStore(ObjectStore):
    """A PACS seen as a store of DICOM files: key ``<study UID>/<series UID>/<SOP UID>.dcm``.

    Listing is QIDO-RS (studies → image series → instances, every level paged); only image
    series are listed (never SEG/SR/PR/KO), so ingest fetches only what it needs. Reading is
    WADO-RS of one instance. An instance is immutable, so its ETag is its SOP Instance UID;
    the size is only known once read (0 in listings). Writes raise :class:`ReadOnlyStore`.
    """

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        super().__init__()
        root, prefix = split_store_url(url)
        self.pacs = Pacs(root, settings)
        self._prefix = prefix
        self.url = self.pacs.address.url + (f"/{prefix}" if prefix else "")

    def _full(self, key: str) -> str:
        return "/".join(p for p in (self._prefix, key) if p)

    def _parse(self, key: str) -> tuple[str, str, str]:
        parts = self._full(key).split("/")
        if len(parts) != 3 or not parts[2].endswith(".dcm"):
            raise ObjectNotFound(key)
        study, series, sop = parts[0], parts[1], parts[2][: -len(".dcm")]
        try:
            return check_uid(study), check_uid(series), check_uid(sop)
        except PacsError:
            raise ObjectNotFound(key) from None

    def _info(self, full_key: str, size: int = 0) -> ObjectInfo:
        key = full_key[len(self._prefix) + 1 :] if self._prefix else full_key
        sop = full_key.rsplit("/", 1)[-1][: -len(".dcm")]
        return ObjectInfo(key=key, size=size, etag=sop, uri=self.uri(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self._full(prefix)
        if self._prefix or "/" in full:  # one study named: QIDO below it only
            studies = [full.split("/", 1)[0]]
        else:  # a study UID may be listed more than once (Orthanc files one study per patient)
            studies = sorted(set(self.pacs.studies()))
        for study in studies:
            for series in sorted(self.pacs.image_series(study)):
                for sop in sorted(self.pacs.instances(study, series)):
                    k = f"{study}/{series}/{sop}.dcm"
                    if k.startswith(full) and (not self._prefix or k.startswith(self._prefix + "/")):
                        yield self._info(k)

    def head(self, key: str) -> ObjectInfo:
        study, series, sop = self._parse(key)
        if sop not in self.pacs.instances(study, series):
            raise ObjectNotFound(key)
        return self._info(self._full(key))

    def _open(self, key: str) -> tuple[Any, ObjectInfo]:
        study, series, sop = self._parse(key)
        try:
            data = self.pacs.retrieve(study, series, sop)
        except PacsError:
            raise ObjectNotFound(key) from None
        return BytesIO(data), self._info(self._full(key), len(data))

    def _read_prefix(self, key: str, nbytes: int) -> bytes:
        stream, _ = self._open(key)
        return stream.read(nbytes)

    def _put_stream(self, key: str, stream: Any, content_type: str | None) -> ObjectInfo:
        raise ReadOnlyStore(f"{self.pacs.address.url} is a PACS: read-only for the pipeline")

    def delete(self, key: str) -> None:
        raise ReadOnlyStore(f"{self.pacs.address.url} is a PACS: read-only for the pipeline")

    def _compare_and_swap(self, key: str, expected_etag: str | None, data: bytes, content_type: str | None) -> ObjectInfo:
        raise ReadOnlyStore(f"{self.pacs.address.url} is a PACS: read-only for the pipeline")

    def uri(self, key: str) -> str:
        return "/".join(p for p in (self.pacs.address.url, self._full(key)) if p)
