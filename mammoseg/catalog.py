"""The run catalog: one typed object per run that owns its keys and its artifacts.

A run lives under ``runs/<run_id>/`` of a store. :class:`RunCatalog` names every key of it
(through :mod:`mammoseg.layout`, the one place keys are invented) and reads and writes each
artifact with its schema:

=====================  =====================================  =================================
artifact               key (below ``runs/<run_id>/``)         read / write
=====================  =====================================  =================================
lesion table           ``lesions-<stage>.csv``                :meth:`~RunCatalog.read_lesions`
manifest               ``preprocessed.csv``                   :meth:`~RunCatalog.read_manifest`
split                  ``split.csv``                          :meth:`~RunCatalog.read_split`
model + plan           ``model/model.keras``, ``plan.json``   :meth:`~RunCatalog.model_file`
metrics of a set       ``evaluation/<set>.json``              :meth:`~RunCatalog.read_metrics`
run report             ``report[-<stage>].json``              :meth:`~RunCatalog.read_report`
inference report       ``report-infer.json``                  :meth:`~RunCatalog.write_inference_report`
validation report      ``validation/<suite>.json``            :meth:`~RunCatalog.write_validation`
quarantine             ``quarantine/<stage>.jsonl``           :meth:`~RunCatalog.read_quarantine`
=====================  =====================================  =================================

Caching: a run reads its manifest, split and model several times (every evaluated set, the
publication, the leakage audit). The catalog keeps what it read, by URI and ETag: a second read
asks the store only for the object's ETag (a HEAD) and downloads nothing when it is unchanged;
a write through the catalog refreshes the entry. Tables come back as copies (callers may change
them); model files are kept under ``<work_dir>/cache/objects``.

Tasks pass URIs between them; :func:`catalog_of` finds the run (store root and run id) of any
URI under ``…/runs/<run_id>/``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from mammoseg import layout, runreport
from mammoseg.plan import PLAN_FILE, ModelPlan
from mammoseg.runreport import QuarantineRecord, RunReport
from mammoseg.settings import Settings, get_settings
from mammoseg.storage import ObjectStore, StoreError, join_key, open_store

T = TypeVar("T")


class CatalogError(ValueError):
    """An artifact that does not have its schema, or a URI that names no run."""


# -- schemas ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSchema:
    """Columns a table must have, and those read as text whatever they look like (a hex digest
    can be all digits, a case id can look like a number)."""

    name: str
    required: tuple[str, ...]
    text: tuple[str, ...] = ()

    def check(self, table: pd.DataFrame, where: str) -> pd.DataFrame:
        missing = [c for c in self.required if c not in table.columns]
        if missing:
            raise CatalogError(f"{where}: the {self.name} lacks column(s) {missing}")
        return table

    def parse(self, data: bytes, where: str) -> pd.DataFrame:
        return self.check(pd.read_csv(io.BytesIO(data), dtype=dict.fromkeys(self.text, str)), where)

    def dump(self, table: pd.DataFrame, where: str) -> bytes:
        return self.check(table, where).to_csv(index=False).encode()


#: ``preprocessed.csv``: one row per preprocessed image (pseudonymous ids, content keys, the
#: image table's columns; a combined training manifest adds ``dataset``).
MANIFEST = TableSchema(
    "manifest",
    required=("case_id", "patient_id", "npz_key", "npz_etag", "params_digest"),
    text=("case_id", "patient_id", "dataset", "params_digest", "npz_etag", "input_hash"),
)
#: The patient index of a manifest (all the leakage audit needs of a training run's manifest).
PATIENTS = TableSchema("patient index", required=("case_id", "patient_id"), text=MANIFEST.text)
#: ``split.csv``: which split every case of the run's training manifest is in.
#: (``patient_id`` and ``dataset`` are written always; a split of an older run may lack them.)
SPLIT = TableSchema("split", required=("case_id", "split"), text=("case_id", "patient_id", "dataset"))
#: ``evaluation/trained-on.csv``: a published model's train/val images (manifest and split in one).
TRAINED_ON = TableSchema("trained-on table", required=("case_id", "npz_key", "npz_etag", "split", "patient_id"),
                         text=("case_id", "patient_id", "npz_etag"))
SplitWrite = TableSchema("split", required=("case_id", "patient_id", "dataset", "split"))
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """The columns of a manifest row every consumer relies on (the rest travel along)."""

    case_id: str
    patient_id: str
    npz_key: str
    npz_etag: str
    params_digest: str


def build_manifest(images: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """The manifest of preprocessed cases: the image table's rows (pseudonymous ids, lesion
    lists as JSON) joined with the preprocessing ``records`` (one per case, ``case_id`` column).

    No source URIs: CBIS-DDSM object names repeat the DICOM PatientID; the run's lesion tables
    map back. A record's column that the image table also has is the image table's."""
    images = images.drop(columns=["image_uri", "mask_uris"])
    records = records.drop(columns=[c for c in records.columns if c in images.columns and c != "case_id"])
    manifest = images.merge(records, on="case_id", how="inner")
    for col in ("mask_geometries", "abnormality_types"):
        manifest[col] = manifest[col].map(json.dumps)
    return manifest


def manifest_rows(table: pd.DataFrame) -> list[ManifestRow]:
    MANIFEST.check(table, "manifest")
    return [ManifestRow(**{f: str(r[f]) for f in ManifestRow.__dataclass_fields__}) for r in table.to_dict("records")]


# -- the cache --------------------------------------------------------------------------------


class _Cache:
    """What this process read, by URI: (ETag, parsed value). Bounded by entries; thread-safe
    (Prefect runs tasks in threads)."""

    def __init__(self, max_entries: int = 64) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, uri: str, kind: str, etag: str) -> Any | None:
        with self._lock:
            hit = self._items.get((uri, kind))
            if hit is None or hit[0] != etag:
                return None
            self._items.move_to_end((uri, kind))
            return hit[1]

    def put(self, uri: str, kind: str, etag: str, value: Any) -> None:
        with self._lock:
            self._items[(uri, kind)] = (etag, value)
            self._items.move_to_end((uri, kind))
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def forget(self, uri: str) -> None:
        with self._lock:
            for k in [k for k in self._items if k[0] == uri]:
                del self._items[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


CACHE = _Cache()


def _cached_read(store: ObjectStore, key: str, kind: str, parse: Callable[[bytes], T]) -> T:
    """``parse(bytes of key)``, from the cache when the object's ETag is unchanged."""
    uri = store.uri(key)
    etag = store.head(key).etag
    hit = CACHE.get(uri, kind, etag)
    if hit is not None:
        return hit
    data, info = store.read_with_info(key)
    value = parse(data)
    CACHE.put(uri, kind, info.etag, value)
    return value


def _write(store: ObjectStore, key: str, data: bytes, content_type: str) -> str:
    info = store.write_bytes(key, data, content_type)
    CACHE.forget(info.uri)
    return info.uri


def cached_file(store: ObjectStore, key: str, settings: Settings | None = None, name: str | None = None) -> Path:
    """A local copy of ``key`` (e.g. a model), downloaded once per ETag into
    ``<work_dir>/cache/objects`` as ``name`` (default: the key's); the path must be treated as
    read-only."""
    settings = settings or get_settings()
    root = settings.work_dir / "cache" / "objects"

    def path_of(etag: str) -> Path:
        folder = hashlib.sha256(f"{store.uri(key)}\n{etag}".encode()).hexdigest()[:32]
        return root / folder / (name or key.rsplit("/", 1)[-1])

    info = store.head(key)
    path = path_of(info.etag)
    if path.exists() and path.stat().st_size == info.size:
        os.utime(path.parent)  # used now: last in line for eviction
        return path
    data, got = store.read_with_info(key)  # got.etag: the version actually read
    path = path_of(got.etag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
    os.utime(path.parent)
    evict_objects(root, settings.object_cache_mib * 2**20, keep=path.parent)
    return path


#: A cached copy used this recently is never evicted (another process may be about to open it).
EVICTION_GRACE_S = 600.0


def evict_objects(root: Path, limit_bytes: int, keep: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the least recently used entries of the object cache ``root`` (one folder each,
    its mtime the last use) until it holds at most ``limit_bytes``; ``keep`` and entries used in
    the last :data:`EVICTION_GRACE_S` seconds stay. Returns the removed folders."""
    import shutil
    import time

    now = time.time() if now is None else now
    entries = []
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.is_dir():
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            entries.append((folder.stat().st_mtime, folder, size))
    total = sum(size for _, _, size in entries)
    removed = []
    for mtime, folder, size in sorted(entries):
        if total <= limit_bytes:
            break
        if folder == keep or now - mtime < EVICTION_GRACE_S:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
        removed.append(folder)
    return removed


# -- the catalog ------------------------------------------------------------------------------


class RunCatalog:
    """The keys and artifacts of run ``run_id`` in ``store``."""

    def __init__(self, store: ObjectStore, run_id: str, settings: Settings | None = None) -> None:
        if not run_id or "/" in run_id:
            raise CatalogError(f"not a run id: {run_id!r}")
        self.store, self.run_id = store, run_id
        self._settings = settings

    @classmethod
    def open(cls, store_url: str, run_id: str, settings: Settings | None = None) -> RunCatalog:
        settings = settings or get_settings()
        return cls(open_store(store_url, settings), run_id, settings)

    @classmethod
    def of_model_key(cls, store: ObjectStore, key: str, settings: Settings | None = None) -> RunCatalog | None:
        """The run whose trained model ``key`` is (``runs/<run_id>/model/model.keras``), or None."""
        parts = key.split("/")
        if len(parts) == 4 and parts[1] and "/" not in parts[1]:
            run = cls(store, parts[1], settings)
            if run.model_key() == key:
                return run
        return None

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def __repr__(self) -> str:
        return f"RunCatalog({self.store.uri(self.prefix)!r})"

    # -- keys (layout.py invents them; this is the run's view of them) -----------------------
    @property
    def prefix(self) -> str:
        return layout.run_prefix(self.run_id)

    def lesions_key(self, stage: str = "ingest") -> str:
        return layout.lesions_key(self.run_id, stage)

    def quarantine_key(self, stage: str) -> str:
        return layout.quarantine_key(self.run_id, stage)

    def report_key(self, stage: str | None = None) -> str:
        return layout.report_key(self.run_id, stage)

    def manifest_key(self) -> str:
        return layout.manifest_key(self.run_id)

    def split_key(self) -> str:
        return layout.split_key(self.run_id)

    def model_key(self) -> str:
        return layout.model_key(self.run_id)

    def plan_key(self) -> str:
        return layout.model_key(self.run_id, PLAN_FILE)

    def curves_key(self) -> str:
        return layout.model_key(self.run_id, "training_curves.png")

    def contact_sheet_key(self) -> str:
        return layout.contact_sheet_key(self.run_id)

    def validation_key(self, suite: str) -> str:
        return layout.validation_key(self.run_id, suite)

    def metrics_key(self, name: str) -> str:
        return layout.evaluation_key(self.run_id, f"{name}.json")

    def overlays_key(self, name: str) -> str:
        return layout.evaluation_key(self.run_id, f"{name}-overlays.png")

    def evaluation_record_key(self, name: str) -> str:
        return layout.evaluation_key(self.run_id, f"{name}-model.json")

    def trained_on_key(self) -> str:
        return layout.evaluation_key(self.run_id, "trained-on.csv")

    def uri(self, key: str) -> str:
        return self.store.uri(key)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    # -- tables --------------------------------------------------------------------------------
    def _read_table(self, key: str, schema: TableSchema) -> pd.DataFrame:
        table = _cached_read(self.store, key, schema.name, lambda b: schema.parse(b, self.uri(key)))
        return table.copy()

    def _write_table(self, key: str, table: pd.DataFrame, schema: TableSchema) -> str:
        return _write(self.store, key, schema.dump(table, self.uri(key)), "text/csv")

    def read_lesions(self, stage: str = "ingest") -> pd.DataFrame:
        """The lesion table (one row per lesion, :mod:`mammoseg.casetable`'s dtypes)."""
        from mammoseg.casetable import from_csv_bytes

        return _cached_read(self.store, self.lesions_key(stage), "lesions", from_csv_bytes).copy()

    def write_lesions(self, table: pd.DataFrame, stage: str = "ingest") -> str:
        from mammoseg.casetable import to_csv_bytes

        return _write(self.store, self.lesions_key(stage), to_csv_bytes(table), "text/csv")

    def read_manifest(self) -> pd.DataFrame:
        return self._read_table(self.manifest_key(), MANIFEST)

    def read_patients(self) -> pd.Series:
        """case_id → patient_id of the run's manifest (only those two columns are required)."""
        table = self._read_table(self.manifest_key(), PATIENTS)
        return table.drop_duplicates("case_id").set_index("case_id")["patient_id"]

    def write_manifest(self, table: pd.DataFrame) -> str:
        return self._write_table(self.manifest_key(), table, MANIFEST)

    def read_split(self) -> pd.DataFrame:
        return self._read_table(self.split_key(), SPLIT)

    def write_split(self, table: pd.DataFrame) -> str:
        SplitWrite.check(table, self.uri(self.split_key()))
        bad = sorted(set(table["split"]) - set(SPLITS)) if "split" in table.columns else []
        if bad:
            raise CatalogError(f"split names {bad} are not {list(SPLITS)}")
        return self._write_table(self.split_key(), table, SPLIT)

    def write_trained_on(self, table: pd.DataFrame) -> str:
        return self._write_table(self.trained_on_key(), table, TRAINED_ON)

    # -- model ---------------------------------------------------------------------------------
    def write_model(self, model_path: Path, plan: ModelPlan) -> tuple[str, str]:
        """``model/model.keras`` and its ``plan.json``; their URIs."""
        model_uri = self.store.write_file(self.model_key(), model_path).uri
        CACHE.forget(model_uri)
        return model_uri, self.write_plan(plan)

    def model_file(self) -> Path:
        """A local copy of the run's model (downloaded once per version)."""
        return cached_file(self.store, self.model_key(), self.settings)

    def read_plan(self) -> ModelPlan:
        return _cached_read(self.store, self.plan_key(), "plan", ModelPlan.from_json)

    def write_plan(self, plan: ModelPlan) -> str:
        return _write(self.store, self.plan_key(), plan.to_json(), "application/json")

    def write_curves(self, png: bytes) -> str:
        return _write(self.store, self.curves_key(), png, "image/png")

    # -- evaluation ----------------------------------------------------------------------------
    def read_metrics(self, name: str) -> dict[str, Any]:
        """``evaluation/<name>.json`` (schema: :class:`mammoseg.evaluation.SetMetrics`)."""
        return copy.deepcopy(_cached_read(self.store, self.metrics_key(name), "json", json.loads))

    def write_metrics(self, name: str, metrics: dict[str, Any]) -> str:
        return _write(self.store, self.metrics_key(name), json.dumps(metrics, indent=2).encode(), "application/json")

    def write_overlays(self, name: str, png: bytes) -> str:
        return _write(self.store, self.overlays_key(name), png, "image/png")

    def write_evaluation_record(self, name: str, record: dict[str, Any]) -> str:
        body = json.dumps(record, indent=2, sort_keys=True).encode()
        return _write(self.store, self.evaluation_record_key(name), body, "application/json")

    # -- reports and quarantine ----------------------------------------------------------------
    def read_report(self, stage: str | None = None) -> RunReport:
        return RunReport.from_dict(_cached_read(self.store, self.report_key(stage), "json", json.loads))

    def write_report(self, report: RunReport) -> str:
        if report.run_id != self.run_id:
            raise CatalogError(f"a report of run {report.run_id} does not belong to run {self.run_id}")
        uri = report.save(self.store)
        CACHE.forget(uri)
        return uri

    def write_inference_report(self, doc: dict[str, Any]) -> str:
        """``report-infer.json``: what an infer-on-arrival run did (not a :class:`RunReport`)."""
        body = json.dumps(doc, indent=2).encode()
        return _write(self.store, self.report_key("infer"), body, "application/json")

    def write_validation(self, suite: str, report: dict[str, Any]) -> str:
        """``validation/<suite>.json``: a GX validation report (``ValidationReport.to_dict()``)."""
        body = json.dumps(report, indent=2).encode()
        return _write(self.store, self.validation_key(suite), body, "application/json")

    def read_quarantine(self, stage: str) -> list[QuarantineRecord]:
        """One stage's quarantine records ([] when the stage wrote none)."""
        return runreport.read_quarantine(self.store, self.run_id, (stage,))

    def write_quarantine(self, stage: str, records: Iterable[QuarantineRecord]) -> str:
        return runreport.write_quarantine(self.store, self.run_id, stage, list(records))


def catalog_of(uri: str, settings: Settings | None = None) -> tuple[RunCatalog, str]:
    """The catalog of the run a URI lies in (``<store root>/runs/<run_id>/…``), and its key
    in the store. :class:`CatalogError` when the URI is not inside a run."""
    head, sep, rest = uri.rpartition("/runs/")
    run_id = rest.split("/", 1)[0]
    if not sep or not head or not run_id or "/" not in rest:
        raise CatalogError("the URI names no run (expected <store>/runs/<run id>/<artifact>)")
    settings = settings or get_settings()
    catalog = RunCatalog(open_store(head, settings), run_id, settings)
    try:
        key = catalog.store.key_from_uri(uri)
    except StoreError as exc:
        raise CatalogError(str(exc)) from None
    return catalog, key


def _at(uri: str, settings: Settings | None) -> tuple[ObjectStore, str]:
    from mammoseg.storage import open_uri

    return open_uri(uri, settings or get_settings())


def _table_at(uri: str, schema: TableSchema, settings: Settings | None) -> pd.DataFrame:
    store, key = _at(uri, settings)
    return _cached_read(store, key, schema.name, lambda b: schema.parse(b, uri)).copy()


def _is_trained_on(uri: str) -> bool:
    return uri.rstrip("/").endswith("/evaluation/trained-on.csv")


def read_manifest(uri: str, settings: Settings | None = None) -> pd.DataFrame:
    """The manifest at ``uri`` (a run's ``preprocessed.csv``), through the cache."""
    return _table_at(uri, MANIFEST, settings)


def read_split(uri: str, settings: Settings | None = None) -> pd.DataFrame:
    """The split at ``uri``: a run's ``split.csv``, or a ``trained-on.csv`` (which holds one)."""
    return _table_at(uri, TRAINED_ON if _is_trained_on(uri) else SPLIT, settings)


def read_training_table(uri: str, settings: Settings | None = None) -> pd.DataFrame:
    """What a model was trained on: a run's manifest, or a ``trained-on.csv``."""
    return _table_at(uri, TRAINED_ON if _is_trained_on(uri) else MANIFEST, settings)


def read_lesions(uri: str, settings: Settings | None = None) -> pd.DataFrame:
    """The lesion table at ``uri`` (:mod:`mammoseg.casetable`'s dtypes), through the cache."""
    from mammoseg.casetable import from_csv_bytes

    store, key = _at(uri, settings)
    return _cached_read(store, key, "lesions", from_csv_bytes).copy()


def read_lesions_and_bytes(uri: str, settings: Settings | None = None) -> tuple[pd.DataFrame, bytes]:
    """The lesion table at ``uri`` and its bytes as stored (what a validation digest covers)."""
    from mammoseg.casetable import from_csv_bytes

    store, key = _at(uri, settings)
    table, data = _cached_read(store, key, "lesions+bytes", lambda b: (from_csv_bytes(b), b))
    return table.copy(), data


def read_report(uri: str, settings: Settings | None = None) -> RunReport:
    store, key = _at(uri, settings)
    return RunReport.from_dict(_cached_read(store, key, "json", json.loads))


def model_file(uri: str, settings: Settings | None = None) -> tuple[ObjectStore, str, Path]:
    """A local copy of the model at any URI (a run's or a published version's): the folder's
    store, the model's key, the path."""
    settings = settings or get_settings()
    store, key = _at(uri, settings)
    return store, key, cached_file(store, key, settings)


__all__ = [
    "CACHE", "MANIFEST", "SPLIT", "TRAINED_ON", "CatalogError", "ManifestRow", "RunCatalog", "TableSchema",
    "cached_file", "catalog_of", "join_key", "manifest_rows", "model_file", "read_lesions",
    "read_lesions_and_bytes", "read_manifest", "read_report", "read_split", "read_training_table",
]
