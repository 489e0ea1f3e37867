"""Preprocess: one Prefect task per case (fanned out with ``.map``), then the pairing gate."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from mammoseg import catalog
from mammoseg.casetable import image_table
from mammoseg.preprocess.finish import PairingGate
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.runreport import QuarantineRecord, redact
from mammoseg.settings import get_settings
from mammoseg.storage import StoreError, open_store
from tasks.retry import IO_RETRIES
from tasks.states import QUARANTINED, completed_as


class MaskSpec(BaseModel):
    key: str | None = None
    geometry: str | None = None


class CaseSpec(BaseModel):
    """What one case task needs: keys in the source store, no arrays."""

    case_id: str
    image_key: str
    laterality: str | None = None
    masks: list[MaskSpec]


class CaseOutcome(BaseModel):
    case_id: str
    ok: bool
    reason: str | None = None  # names no source object (see ``redact``)
    source: str | None = None  # the source key, kept for the quarantine record only
    record: dict[str, Any] = {}  # CaseResult.to_record() on success
    pairing: list[dict[str, Any]] = []  # one row per lesion for the GX pairing suite


class PreprocessSummary(BaseModel):
    run_id: str
    manifest_uri: str | None
    contact_sheet_uri: str | None
    cases_in: int
    cases_preprocessed: int
    computed: int
    cached: int
    quarantined: int
    pairing_report_uri: str | None = None


class CasePlan(BaseModel):
    specs: list[CaseSpec]
    refused: list[CaseOutcome]  # cases whose URIs do not lie in the source store


@task(name="plan-cases", **IO_RETRIES)
def plan_cases(lesions_uri: str, source_url: str) -> CasePlan:
    """Lesion table → one spec per image; URIs that do not lie in the source are refused."""
    settings = get_settings()
    images = image_table(catalog.read_lesions(lesions_uri, settings))
    source = open_store(source_url, settings)
    specs: list[CaseSpec] = []
    refused: list[CaseOutcome] = []
    for row in images.itertuples(index=False):
        try:
            masks = [MaskSpec(key=source.key_from_uri(u)) for u in row.mask_uris]
            masks += [MaskSpec(geometry=g) for g in row.mask_geometries]
            image_key = source.key_from_uri(row.image_uri)
        except StoreError as exc:
            refused.append(CaseOutcome(case_id=row.case_id, ok=False, reason="a URI of this case lies outside the source store", source=str(exc)))
            continue
        specs.append(CaseSpec(case_id=row.case_id, image_key=image_key, laterality=row.laterality, masks=masks))
    return CasePlan(specs=specs, refused=refused)


@task(
    name="preprocess-case",
    task_run_name="preprocess-{spec.case_id}",
    cache_policy=NO_CACHE,  # our own cache is content-addressed in the store
    **IO_RETRIES,
)
def preprocess_one(spec: CaseSpec, source_url: str, store_url: str, params: PreprocessParams) -> CaseOutcome:
    """Decode → crop → flip → CLAHE → resize one case with ``params``; bad input becomes a
    quarantine outcome."""
    from mammoseg.preprocess import MaskRef, PreprocessError, preprocess_case

    settings = get_settings()
    refs = [MaskRef(key=m.key) if m.key else MaskRef(geometry=m.geometry) for m in spec.masks]
    try:
        result = preprocess_case(
            open_store(source_url, settings), spec.image_key, refs, open_store(store_url, settings),
            params, laterality=spec.laterality,
        )
    except PreprocessError as exc:
        reason = redact(str(exc), {spec.image_key: "<image>"} | {m.key: f"<mask {i}>" for i, m in enumerate(spec.masks, 1) if m.key})
        get_run_logger().warning("quarantined at preprocessing: case=%s %s", spec.case_id, reason)
        outcome = CaseOutcome(case_id=spec.case_id, ok=False, reason=reason, source=spec.image_key)
        return completed_as(outcome, QUARANTINED, reason)  # the case's task run reads "Quarantined"
    return CaseOutcome(case_id=spec.case_id, ok=True, record=result.to_record(), pairing=result.pairing_records())


class _CacheMiss(Exception):
    """The case is not in the cache: answering it would decode pixels."""


class _HeadersOnly:
    """A view of a store for the cache probe: metadata and small reads pass, pixel reads
    (``read_bytes`` of the source) raise :class:`_CacheMiss`."""

    def __init__(self, store: Any, *, block_reads: bool) -> None:
        self._store, self._block = store, block_reads

    def __getattr__(self, name: str) -> Any:
        if name.startswith("write") or name in {"compare_and_swap", "delete"}:
            raise _CacheMiss(name)  # the probe never writes
        if self._block and name in {"read_bytes", "read_with_info", "read_prefix", "open"}:
            raise _CacheMiss(name)
        return getattr(self._store, name)


def _probe_one(spec: CaseSpec, source: Any, out: Any, params: PreprocessParams) -> CaseOutcome | None:
    from mammoseg.preprocess import MaskRef, preprocess_case

    refs = [MaskRef(key=m.key) if m.key else MaskRef(geometry=m.geometry) for m in spec.masks]
    try:
        result = preprocess_case(
            _HeadersOnly(source, block_reads=True), spec.image_key, refs, _HeadersOnly(out, block_reads=False),
            params, laterality=spec.laterality,
        )
    except Exception:  # noqa: BLE001 — a miss, bad input or a store fault: the case task decides (and retries)
        return None
    return CaseOutcome(case_id=spec.case_id, ok=True, record=result.to_record(), pairing=result.pairing_records())


@task(name="probe-preprocess-cache", cache_policy=NO_CACHE, **IO_RETRIES)
def probe_cache(specs: list[CaseSpec], source_url: str, store_url: str, params: PreprocessParams) -> list[CaseOutcome | None]:
    """Each case's outcome when its arrays are already in the content-addressed cache (found by
    the inputs' ETags, exactly as :func:`preprocess_case` looks them up: no pixel is read), else
    None. Run in the flow's process before the fan-out, so an incremental re-run sends only new
    cases to the workers instead of one task run per unchanged case."""
    from concurrent.futures import ThreadPoolExecutor

    settings = get_settings()
    source, out = open_store(source_url, settings), open_store(store_url, settings)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda s: _probe_one(s, source, out, params), specs))


@task(name="pairing-gate-and-manifest", **IO_RETRIES)
def finish_preprocess(
    outcomes: list[CaseOutcome], lesions_uri: str, store_url: str, run_id: str
) -> PreprocessSummary:
    """GX pairing suite over every case; write quarantine, manifest and contact sheet."""
    from mammoseg.preprocess.finish import PreprocessedCase
    from mammoseg.preprocess.finish import finish_preprocess as finish

    run = catalog.RunCatalog.open(store_url, run_id, get_settings())
    failed = [
        QuarantineRecord(stage="preprocess", reason=o.reason or "failed", case_id=o.case_id, source=o.source)
        for o in outcomes
        if not o.ok
    ]
    done = [PreprocessedCase(o.case_id, o.record, o.pairing) for o in outcomes if o.ok]
    result = finish(run, lesions_uri, done, failed)
    _log_pairing(result.pairing)
    n_bad = len(failed) + len(result.pairing.records)
    summary = PreprocessSummary(
        run_id=run_id,
        manifest_uri=result.manifest_uri,
        contact_sheet_uri=result.contact_sheet_uri,
        cases_in=len(outcomes),
        cases_preprocessed=result.preprocessed,
        computed=result.computed,
        cached=result.cached,
        quarantined=n_bad,
        pairing_report_uri=result.pairing.report_uri,
    )
    return completed_as(summary, QUARANTINED if n_bad else None, f"{n_bad} case(s) quarantined" if n_bad else None)


def _log_pairing(gate: PairingGate) -> None:
    logger = get_run_logger()
    if gate.reused_from is not None:
        logger.info("GX pairing: passed (this exact table passed in run %s; result reused)", gate.reused_from)
    for r in gate.records:
        logger.warning("quarantined by the pairing suite: case=%s %s", r.case_id, r.reason)
