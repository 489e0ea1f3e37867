"""Versioned models in the object store and the champion/challenger gate.

Layout (keys relative to the store root)::

    models/versions/<version>/model.keras
    models/versions/<version>/plan.json               inference plan (mammoseg.plan.ModelPlan); optional
    models/versions/<version>/training_config.json
    models/versions/<version>/data_manifest.json      object keys + ETags the model was trained on
    models/versions/<version>/metrics.json            evaluation: the primary set's figures at the top
                                                      level (what the gate reads), every set by dataset
                                                      under "internal_test" / "heldout"
    models/versions/<version>/MODEL_CARD.md
    models/versions/<version>/COMPLETE                written LAST: file list with sizes and ETags
    models/CURRENT                                    champion pointer (small JSON, written last)

A version id is ``<UTC timestamp>-<first 8 hex of the model's SHA-256>``
(``20250102T030405Z-1a2b3c4d``), or, for a pipeline run, ``<run id>-<sha8>``
(``20250102T030405Z-3fa1-1a2b3c4d``, see :func:`make_version_id`): it sorts by time and names the
exact weights, and a retried publish of one run names the same version. A version without
``COMPLETE`` (a crash mid-publish, or a publish still running) is **never** eligible; a version
whose files no longer match the sizes/ETags recorded in ``COMPLETE`` is not eligible either.
Published versions are immutable: publishing *different* content to a complete version id is
refused; publishing the same content again (a retry) returns the existing version.

The gate (:func:`promote_if_better`) compares the challenger's held-out metric with the
champion's (read from the champion's own ``metrics.json``) and rewrites ``models/CURRENT`` — one
small object, so readers see the old or the new champion, never a mix. Higher is better for
every metric the gate is used with (Dice, IoU, sensitivity). When both metrics files carry an
``eval_set`` fingerprint (:func:`eval_set_fingerprint`) and they differ, the scores are not
comparable and the gate refuses. Promotions may run concurrently: ``CURRENT`` is rewritten by
compare-and-swap (:meth:`~mammoseg.storage.ObjectStore.compare_and_swap`) on the ETag the gate
read, and a promotion that loses the race re-reads the new champion and compares again, so a
concurrent promotion can never replace a better champion by a worse one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mammoseg.storage import ObjectNotFound, ObjectStore, PreconditionFailed, join_key

if TYPE_CHECKING:
    from mammoseg.plan import ModelPlan
    from mammoseg.settings import Settings

MODELS_PREFIX: Final = "models"
VERSIONS_PREFIX: Final = "models/versions"
CURRENT_KEY: Final = "models/CURRENT"
COMPLETE_NAME: Final = "COMPLETE"

#: File names inside a version folder, in the order they are written (COMPLETE comes after).
FILES: Final = {
    "model": "model.keras",
    "plan": "plan.json",
    "bundle": "bundle.json",
    "training_config": "training_config.json",
    "data_manifest": "data_manifest.json",
    "metrics": "metrics.json",
    "model_card": "MODEL_CARD.md",
}

#: Files a version may lack: versions published before plans (bundles) existed have no ``plan.json``
#: (``bundle.json``)
#: (:func:`mammoseg.inference.load_predictor` then rebuilds the plan). Once ``COMPLETE`` lists
#: one, it is checked like every other file.
OPTIONAL_FILES: Final = frozenset({"plan", "bundle"})

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: Rounds of read-compare-write before a promotion that keeps losing races gives up.
_MAX_PROMOTION_ROUNDS: Final = 50


class PublishError(Exception):
    """Publishing or reading a model version failed; the message says why."""


# -- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishedVersion:
    """A complete model version: where its files are and what the COMPLETE marker recorded."""

    version: str
    prefix: str
    model_uri: str
    metrics_uri: str
    training_config_uri: str
    data_manifest_uri: str
    model_card_uri: str
    model_sha256: str
    completed_at: str
    plan_uri: str | None = None  # None: published before plans existed


@dataclass(frozen=True)
class ChampionPointer:
    """Content of ``models/CURRENT``."""

    version: str
    metric: str
    score: float
    promoted_at: str
    previous: str | None = None

    def to_json(self) -> bytes:
        return _dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> ChampionPointer:
        try:
            d = json.loads(data)
            return cls(
                version=str(d["version"]),
                metric=str(d["metric"]),
                score=float(d["score"]),
                promoted_at=str(d["promoted_at"]),
                previous=None if d.get("previous") is None else str(d["previous"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PublishError(f"{CURRENT_KEY} is not a valid champion pointer: {exc}") from exc


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the champion/challenger gate, with a sentence saying why."""

    promoted: bool
    reason: str
    version: str
    metric: str
    champion_before: str | None
    challenger_score: float | None
    champion_score: float | None


# -- helpers --------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    """Strict JSON (NaN/inf refused), sorted keys; numpy scalars and paths are converted."""

    def default(o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=default)
    return (text + "\n").encode("utf-8")


def _json_payload(obj: Any, what: str) -> bytes:
    try:
        return _dumps(obj)
    except (TypeError, ValueError) as exc:
        raise PublishError(
            f"{what} cannot be written as strict JSON ({exc}); replace NaN/inf by null"
        ) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def version_prefix(version: str) -> str:
    return join_key(VERSIONS_PREFIX, _check_version(version))


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise PublishError(
            f"invalid version id {version!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return version


def make_version_id(
    model_file: Path,
    *,
    now: datetime | None = None,
    sha256: str | None = None,
    run_id: str | None = None,
) -> str:
    """``YYYYMMDDTHHMMSSZ-<sha8>``: UTC time + first 8 hex digits of the model's SHA-256.

    With ``run_id``: ``<run id>-<sha8>``, with no clock involved, so every attempt of one run
    (a retried publish task) names the same version and :func:`publish_version` can recognise
    it as already published. Run ids from :func:`mammoseg.layout.new_run_id` start with their
    UTC start time, so these ids sort by time too. Characters a version id cannot hold are
    replaced (and a short hash of the run id is then added, so distinct runs stay distinct).
    """
    digest = sha256 or _sha256(Path(model_file))
    if run_id is None:
        return f"{(now or _now()).astimezone(UTC):%Y%m%dT%H%M%SZ}-{digest[:8]}"
    run = str(run_id)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", run).lstrip("._-")[:110]
    if clean != run:
        clean = f"{clean}-{hashlib.sha256(run.encode()).hexdigest()[:6]}".lstrip("-")
    return _check_version(f"{clean}-{digest[:8]}")


def eval_set_fingerprint(manifest: Iterable[Mapping[str, object]]) -> str:
    """SHA-256 of the sorted ``(case_id, npz_etag)`` pairs of a held-out manifest.

    Store it as ``metrics["eval_set"]``: the gate only compares scores on the same held-out set.
    """
    lines = sorted(f"{r.get('case_id', '')}\t{r.get('npz_etag', '')}" for r in manifest)
    if not lines:
        raise PublishError("cannot fingerprint an empty evaluation manifest")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """``metrics[metric]``, or a dotted path (``detection.sensitivity_at_2fp``); None if absent."""
    node: Any = metrics
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    value = float(node)
    return value if math.isfinite(value) else None


# -- publish --------------------------------------------------------------------------------
def publish_version(
    store: ObjectStore,
    *,
    model_file: Path,
    training_config: Mapping[str, Any],
    data_manifest: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    model_card_md: str,
    version: str | None = None,
    plan: ModelPlan | None = None,
) -> PublishedVersion:
    """Write a new immutable model version; the ``COMPLETE`` marker is written last.

    ``plan``: the model's inference plan, published as ``plan.json`` beside ``model.keras``
    (where :func:`mammoseg.inference.load_predictor` looks for it) and recorded in ``COMPLETE``.
    ``data_manifest`` rows need at least ``key`` and ``etag``. Everything is checked (strict JSON,
    no NaN) before the first write, so bad input leaves nothing behind. Re-publishing to a version
    id whose earlier attempt crashed (no ``COMPLETE``) overwrites the leftovers. Publishing to a
    complete version is idempotent: the same content (model weights and every file) returns the
    existing version and writes nothing; different content raises :class:`PublishError`.
    """
    model_file = Path(model_file)
    if not model_file.is_file():
        raise PublishError(f"model file {model_file} does not exist")
    for i, row in enumerate(data_manifest):
        if not isinstance(row, Mapping) or not all(
            isinstance(row.get(k), str) and row.get(k) for k in ("key", "etag")
        ):
            raise PublishError(f"data_manifest row {i} needs non-empty 'key' and 'etag' strings")
    payloads = {
        "training_config": _json_payload(dict(training_config), "training_config"),
        "data_manifest": _json_payload([dict(r) for r in data_manifest], "data_manifest"),
        "metrics": _json_payload(dict(metrics), "metrics"),
        "model_card": model_card_md.encode("utf-8"),
    }
    if plan is not None:
        payloads["plan"] = plan.to_json()
    digest = _sha256(model_file)
    version = _check_version(version) if version else make_version_id(model_file, sha256=digest)
    if plan is not None:  # the model bundle (mammoseg/bundle.py): formats, input spec, labels, versions
        from mammoseg.bundle import make_bundle

        payloads["bundle"] = make_bundle(plan, version=version).to_json()
    prefix = version_prefix(version)
    complete_key = join_key(prefix, COMPLETE_NAME)
    existing = _read_marker(store, version)
    if existing is not None:
        return _existing_version(store, version, existing, digest, payloads)

    infos = {"model": store.write_file(join_key(prefix, FILES["model"]), model_file)}
    for name in (n for n in FILES if n in payloads):
        ctype = "text/markdown" if name == "model_card" else "application/json"
        infos[name] = store.write_bytes(join_key(prefix, FILES[name]), payloads[name], ctype)
    completed_at = _iso(_now())
    marker = {
        "version": version,
        "completed_at": completed_at,
        "model_sha256": digest,
        "files": {
            FILES[n]: {"key": i.key, "size": i.size, "etag": i.etag} for n, i in infos.items()
        },
    }
    try:  # create-only: a concurrent publish of this version may have completed meanwhile
        store.compare_and_swap(complete_key, None, _dumps(marker), "application/json")
    except PreconditionFailed:
        existing = _read_marker(store, version)
        if existing is None:
            raise PublishError(
                f"version {version}: {COMPLETE_NAME} vanished while publishing"
            ) from None
        return _existing_version(store, version, existing, digest, payloads)
    return _published(store, version, marker)


def _existing_version(
    store: ObjectStore,
    version: str,
    marker: Mapping[str, Any],
    digest: str,
    payloads: Mapping[str, bytes],
) -> PublishedVersion:
    """The complete ``version`` if it holds exactly what this publish would write (a retry);
    else :class:`PublishError` (versions are immutable)."""
    prefix = version_prefix(version)
    differs = []
    if marker.get("model_sha256") != digest:
        differs.append(FILES["model"])
    wanted = {FILES["model"], *(FILES[n] for n in payloads)}
    differs += sorted(set(marker["files"]) ^ wanted)
    for name, data in payloads.items():
        if FILES[name] in differs:
            continue
        try:
            same = store.read_bytes(join_key(prefix, FILES[name])) == data
        except ObjectNotFound:
            same = False
        if not same:
            differs.append(FILES[name])
    if differs:
        raise PublishError(
            f"version {version} is already published with different content "
            f"({', '.join(differs)}); versions are immutable"
        )
    problems = verify_version(store, version)
    if problems:
        raise PublishError(
            f"version {version} is already published but not usable: " + "; ".join(problems)
        )
    return _published(store, version, marker)


def _published(store: ObjectStore, version: str, marker: Mapping[str, Any]) -> PublishedVersion:
    prefix = version_prefix(version)
    return PublishedVersion(
        version=version,
        prefix=prefix,
        model_uri=store.uri(join_key(prefix, FILES["model"])),
        metrics_uri=store.uri(join_key(prefix, FILES["metrics"])),
        training_config_uri=store.uri(join_key(prefix, FILES["training_config"])),
        data_manifest_uri=store.uri(join_key(prefix, FILES["data_manifest"])),
        model_card_uri=store.uri(join_key(prefix, FILES["model_card"])),
        model_sha256=str(marker.get("model_sha256", "")),
        completed_at=str(marker.get("completed_at", "")),
        plan_uri=store.uri(join_key(prefix, FILES["plan"])) if FILES["plan"] in marker["files"] else None,
    )


def _read_marker(store: ObjectStore, version: str) -> dict[str, Any] | None:
    try:
        data = store.read_bytes(join_key(version_prefix(version), COMPLETE_NAME))
    except ObjectNotFound:
        return None
    try:
        marker = json.loads(data)
    except ValueError as exc:
        raise PublishError(f"COMPLETE marker of version {version} is not JSON: {exc}") from exc
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        raise PublishError(f"COMPLETE marker of version {version} has no file list")
    return marker


def verify_version(store: ObjectStore, version: str) -> list[str]:
    """Why ``version`` is not eligible (``[]`` when it is complete and intact)."""
    marker = _read_marker(store, version)
    if marker is None:
        return [
            (
                f"version {version} has no {COMPLETE_NAME} marker (publish interrupted or still "
                "running)"
            )
        ]
    problems = []
    for what, name in FILES.items():
        rec = marker["files"].get(name)
        if rec is None and what in OPTIONAL_FILES:
            continue
        if not isinstance(rec, Mapping):
            problems.append(f"{name} is not listed in the {COMPLETE_NAME} marker")
            continue
        try:
            info = store.head(join_key(version_prefix(version), name))
        except ObjectNotFound:
            problems.append(f"{name} is missing")
            continue
        if info.size != rec.get("size") or info.etag != rec.get("etag"):
            problems.append(f"{name} changed after publishing (size/ETag differ)")
    return problems


def is_complete(store: ObjectStore, version: str) -> bool:
    """True when the version has its COMPLETE marker and every file matches it."""
    return not verify_version(store, version)


def read_version(store: ObjectStore, version: str) -> PublishedVersion:
    """A complete version; :class:`PublishError` if it is absent or incomplete."""
    problems = verify_version(store, version)
    if problems:
        raise PublishError(f"version {version} is not usable: " + "; ".join(problems))
    marker = _read_marker(store, version)
    assert marker is not None
    return _published(store, version, marker)


def read_metrics(store: ObjectStore, version: str) -> dict[str, Any]:
    key = join_key(version_prefix(version), FILES["metrics"])
    try:
        return json.loads(store.read_bytes(key))
    except ObjectNotFound:
        raise PublishError(f"version {version} has no {FILES['metrics']}") from None
    except ValueError as exc:
        raise PublishError(f"{key} is not JSON: {exc}") from exc


def list_versions(store: ObjectStore, *, complete_only: bool = True) -> list[str]:
    """Version ids in sort (= time) order; by default only those with a COMPLETE marker."""
    seen: dict[str, bool] = {}
    for info in store.list(VERSIONS_PREFIX + "/"):
        parts = info.key.split("/")
        if len(parts) != 4:
            continue
        seen[parts[2]] = seen.get(parts[2], False) or parts[3] == COMPLETE_NAME
    return sorted(v for v, done in seen.items() if done or not complete_only)


# -- champion / challenger ------------------------------------------------------------------
def read_pointer(store: ObjectStore) -> ChampionPointer | None:
    """The champion pointer, or None when no model was ever promoted."""
    try:
        return ChampionPointer.from_json(store.read_bytes(CURRENT_KEY))
    except ObjectNotFound:
        return None


def current_model(store: ObjectStore) -> PublishedVersion | None:
    """The champion version, or None; :class:`PublishError` if the pointer names a bad version."""
    pointer = read_pointer(store)
    return None if pointer is None else read_version(store, pointer.version)


def _read_pointer_and_etag(store: ObjectStore) -> tuple[ChampionPointer | None, str | None]:
    """The champion pointer and the ETag of the ``CURRENT`` object it was read from."""
    try:
        data, info = store.read_with_info(CURRENT_KEY)
    except ObjectNotFound:
        return None, None
    return ChampionPointer.from_json(data), info.etag


def promote_if_better(
    store: ObjectStore,
    version: str,
    *,
    metric: str = "dice_mean",
    min_improvement: float = 0.0,
) -> GateDecision:
    """Promote ``version`` when it is complete and its held-out ``metric`` beats the champion's
    by more than ``min_improvement`` (or there is no champion). Otherwise nothing is written.

    Safe under concurrent promotions: ``CURRENT`` is replaced only if it is still the object the
    decision was made on (compare-and-swap on its ETag; create-only when there was none). A
    promotion that loses the race re-reads the new champion and decides again.
    """
    if min_improvement < 0 or not math.isfinite(min_improvement):
        raise PublishError("min_improvement must be a finite number >= 0")
    problems = verify_version(store, version)
    ch_metrics = read_metrics(store, version) if not problems else {}
    ch_score = _metric_value(ch_metrics, metric)
    lost_race = False
    for round_ in range(_MAX_PROMOTION_ROUNDS):
        pointer, etag = _read_pointer_and_etag(store)
        before = pointer.version if pointer else None

        def refuse(
            reason: str,
            ch: float | None = None,
            champ: float | None = None,
            _b: str | None = before,
        ) -> GateDecision:
            return GateDecision(False, reason, version, metric, _b, ch, champ)

        if problems:
            return refuse(f"not eligible: {'; '.join(problems)}")
        if ch_score is None:
            return refuse(f"version {version} has no finite {metric!r} in its metrics")
        if pointer is None:
            champ_score = None
            reason = f"no champion yet; promoted with {metric} {ch_score:.4f}"
        elif pointer.version == version:
            if lost_race:  # a concurrent promotion of this same version (or our own write) won
                return GateDecision(
                    promoted=True,
                    reason=f"promoted with {metric} {ch_score:.4f} (confirmed after a concurrent "
                    "write of the champion pointer)",
                    version=version,
                    metric=metric,
                    champion_before=pointer.previous,
                    challenger_score=ch_score,
                    champion_score=None,
                )
            return refuse(f"version {version} is already the champion", ch_score, pointer.score)
        else:
            try:
                champ_metrics: Mapping[str, Any] | None = read_metrics(store, pointer.version)
            except PublishError:
                champ_metrics = None
            champ_score = (
                _metric_value(champ_metrics, metric) if champ_metrics is not None else None
            )
            if champ_score is None and pointer.metric == metric:
                champ_score = pointer.score
            if champ_score is None:
                return refuse(
                    f"champion {pointer.version} has no {metric!r} to compare with; compare on "
                    f"{pointer.metric!r} instead",
                    ch_score,
                )
            a, b = ch_metrics.get("eval_set"), (champ_metrics or {}).get("eval_set")
            if a and b and a != b:
                return refuse(
                    f"scores are on different held-out sets (eval_set {str(a)[:12]} vs "
                    f"{str(b)[:12]}); re-evaluate the champion on the challenger's test set",
                    ch_score,
                    champ_score,
                )
            if not ch_score > champ_score + min_improvement:
                return refuse(
                    f"{metric} {ch_score:.4f} does not beat champion {pointer.version} "
                    f"({champ_score:.4f}) by more than {min_improvement:g}; champion kept",
                    ch_score,
                    champ_score,
                )
            reason = (
                f"{metric} {ch_score:.4f} beats champion {pointer.version} "
                f"({champ_score:.4f}) by more than {min_improvement:g}"
            )
        new = ChampionPointer(
            version=version,
            metric=metric,
            score=ch_score,
            promoted_at=_iso(_now()),
            previous=before,
        )
        try:
            store.compare_and_swap(CURRENT_KEY, etag, new.to_json(), "application/json")
        except PreconditionFailed:
            # another promotion rewrote CURRENT since we read it: decide again on the new one
            lost_race = True
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2**round_)))
            continue
        return GateDecision(
            promoted=True,
            reason=reason,
            version=version,
            metric=metric,
            champion_before=before,
            challenger_score=ch_score,
            champion_score=champ_score,
        )
    raise PublishError(
        f"could not promote version {version}: {CURRENT_KEY} kept changing during "
        f"{_MAX_PROMOTION_ROUNDS} attempts"
    )


def promote_version(store: ObjectStore, version: str, *, metric: str) -> tuple[bool, str, str | None]:
    """:func:`promote_if_better`, retry-safe: a version an earlier attempt of the same run had
    already promoted counts as promoted. (promoted, reason, the champion's version after)."""
    decision = promote_if_better(store, version, metric=metric)
    pointer = read_pointer(store)
    promoted, reason = decision.promoted, decision.reason
    if not promoted and pointer is not None and pointer.version == version:
        promoted, reason = True, f"promoted by an earlier attempt of this run ({decision.reason})"
    return promoted, reason, pointer.version if pointer else None


# -- model card -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSplitSummary:
    """Counts of one dataset in one split (splits are by patient)."""

    dataset: str
    split: str
    n_images: int
    n_patients: int
    n_lesions: int | None = None


@dataclass(frozen=True)
class EvaluatedSet:
    """The figures of one evaluated set of a model: the internal test split of a training
    dataset (``kind="internal_test"``, in-domain) or a whole held-out dataset
    (``kind="heldout"``, cross-dataset). ``metrics`` is what ``evaluate-model`` wrote;
    ``leakage_findings`` None: no audit was run, ``[]``: none found."""

    name: str
    dataset: str
    kind: str
    metrics: Mapping[str, Any]
    leakage_findings: Sequence[str] | None = None


_KINDS: Final = {"internal_test": "internal test split", "heldout": "held-out dataset"}


def combined_metrics(
    sets: Sequence[EvaluatedSet], primary: str, *, run_id: str | None = None,
    validation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``metrics.json`` of a version evaluated on several sets (built here only).

    The top level holds the figures (and ``eval_set`` fingerprint) of the ``primary`` set, the
    one :func:`promote_if_better` compares, named by ``primary_set``; every set is listed by
    dataset under ``internal_test`` (in-domain) or ``heldout`` (cross-dataset). A primary set
    that was not evaluated leaves the top level without figures, so the gate refuses.
    """
    by_name = {e.name: e for e in sets}
    chosen = by_name.get(primary)
    out: dict[str, Any] = dict(chosen.metrics) if chosen else {}
    out["primary_set"] = primary
    if chosen:
        out["primary_dataset"], out["primary_kind"] = chosen.dataset, chosen.kind
    else:
        out["primary_missing"] = f"the primary set {primary} was not evaluated (no cases)"
    for kind in _KINDS:
        out[kind] = {e.dataset: dict(e.metrics) for e in sets if e.kind == kind}
    if run_id is not None:  # the run that trained the version, and its validation figures
        out["run_id"] = run_id
    if validation is not None:
        out["validation"] = dict(validation)
    return out


@dataclass(frozen=True)
class TrainingData:
    """What a version was trained and tested on: counts per dataset and split (model card),
    the train/val images by content (``data_manifest.json``), the datasets by role."""

    counts: list[DataSplitSummary]
    data_manifest: list[dict[str, Any]]
    datasets: dict[str, list[str]]


def trained_on_table(rows: Sequence[Mapping[str, Any]], patients: Mapping[str, str] | Any | None) -> Any:
    """A published version's ``data_manifest.json`` rows as the leakage audit's training table
    (case, NPZ key and ETag, split — ``train`` when unrecorded — and the patient of each case
    from ``patients``, a case id → patient id map; None: patient ids unknown)."""
    import pandas as pd

    table = pd.DataFrame({
        "case_id": [r.get("case_id") for r in rows],
        "npz_key": [r.get("key") for r in rows],
        "npz_etag": [r.get("etag") for r in rows],
        "split": [r.get("split") or "train" for r in rows],
    })
    table["patient_id"] = table["case_id"].map(patients) if patients is not None else None
    return table


@dataclass(frozen=True)
class TrainingRecord:
    """How a run's model was trained: configurations (as JSON-ready dicts), the chosen
    threshold, the epoch history and the best validation Dice and epoch."""

    model: Mapping[str, Any]
    training: Mapping[str, Any]
    threshold: float
    history: Sequence[Mapping[str, float]]
    best_val_dice: float
    best_epoch: int


def publish_run(
    store: ObjectStore, *, run_id: str, model_file: Path, plan: ModelPlan, evaluations: Sequence[EvaluatedSet],
    primary: str, data: TrainingData, training: TrainingRecord, sources: Mapping[str, str] | None = None,
) -> tuple[PublishedVersion, str]:
    """Publish a retrain run's model: its ``metrics.json`` (:func:`combined_metrics`), its
    ``training_config.json`` (``training``: the model and training configurations, threshold,
    history, best validation Dice and epoch), the data it saw and its model card. The version id
    comes from the run id, not the clock: a retry names (and, once complete, returns) the same
    version instead of publishing a second one. Returns the version and the card's Markdown."""
    metrics = combined_metrics(evaluations, primary, run_id=run_id, validation={
        "best_val_dice": training.best_val_dice, "best_epoch": training.best_epoch})
    training_config = {"model": training.model, "training": training.training, "threshold": training.threshold,
                       "history": training.history, "run_id": run_id, "datasets": data.datasets, "primary_set": primary}
    version = make_version_id(model_file, run_id=run_id)
    card = model_card(version=version, data=data.counts, metrics=metrics, training_config=training_config,
                      evaluations=evaluations, primary=primary, sources=sources)
    published = publish_version(store, model_file=model_file, training_config=training_config, plan=plan,
                                data_manifest=data.data_manifest, metrics=metrics, model_card_md=card, version=version)
    return published, card


def training_data(manifest: Any, split: Any, heldout: Mapping[str, Any]) -> TrainingData:
    """:class:`TrainingData` of a run: its combined training ``manifest`` (``dataset``
    column), its ``split`` table and the held-out sets' manifests (dataset → table)."""

    def counts(dataset: str, which: str, rows: Any) -> DataSplitSummary:
        return DataSplitSummary(dataset, which, len(rows), int(rows["patient_id"].nunique()), int(rows["n_lesions"].sum()))

    merged = manifest.merge(split[["case_id", "split"]], on="case_id")
    summary = [
        counts(dataset, s, part[part["split"] == s])
        for dataset, part in merged.groupby("dataset", sort=True)
        for s in ("train", "val", "test")
    ]
    summary += [counts(dataset, "held-out test", table) for dataset, table in heldout.items()]
    rows = [
        {"key": r.npz_key, "etag": r.npz_etag, "case_id": r.case_id, "dataset": r.dataset, "split": r.split}
        for r in merged.itertuples(index=False)
        if r.split in ("train", "val")
    ]
    datasets = {"train": sorted(merged["dataset"].unique().tolist()), "heldout": list(heldout)}
    return TrainingData(counts=summary, data_manifest=rows, datasets=datasets)


@dataclass(frozen=True)
class RunOutputs:
    """Where a retrain run's outputs are: its model and plan, its split, its combined training
    manifest (``dataset`` column) and the held-out datasets' manifests (dataset → URI)."""

    model_uri: str
    plan_uri: str
    split_uri: str
    train_manifest_uri: str
    heldout_manifest_uris: Mapping[str, str]


@dataclass(frozen=True)
class RunPublication:
    """A retrain run's published version, its model card and the promotion gate's verdict
    (``current_version``: the champion's version after the gate)."""

    published: PublishedVersion
    card: str
    promoted: bool
    gate_reason: str
    current_version: str | None


def publish_and_promote(
    store: ObjectStore, *, run_id: str, outputs: RunOutputs, evaluations: Sequence[EvaluatedSet], primary: str,
    training: TrainingRecord, promote_metric: str, sources: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> RunPublication:
    """:func:`publish_run` over the run's ``outputs`` (read through the run catalog), then
    :func:`promote_version` of the published version on ``promote_metric``."""
    from mammoseg import catalog

    published, card = publish_run(
        store, run_id=run_id, model_file=catalog.model_file(outputs.model_uri, settings)[2],
        plan=catalog.catalog_of(outputs.plan_uri, settings)[0].read_plan(), primary=primary, sources=sources,
        evaluations=evaluations, training=training,
        data=training_data(
            catalog.read_manifest(outputs.train_manifest_uri, settings), catalog.read_split(outputs.split_uri, settings),
            {dataset: catalog.read_manifest(uri, settings) for dataset, uri in outputs.heldout_manifest_uris.items()},
        ),
    )
    promoted, gate_reason, current = promote_version(store, published.version, metric=promote_metric)
    return RunPublication(published=published, card=card, promoted=promoted, gate_reason=gate_reason,
                          current_version=current)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(metrics: Mapping[str, Any], key: str) -> str:
    c = (metrics.get("ci95") or {}).get(key)
    return f"{_fmt(c[0])} – {_fmt(c[1])}" if c else "n/a"


def _leakage_lines(findings: Sequence[str] | None, what: str = "train vs test") -> list[str]:
    if findings is None:
        return [f"Leakage audit ({what}): not run."]
    if not findings:
        return [f"Leakage audit ({what}): no shared patients, images or contents."]
    return ["**Leakage audit found problems — the test numbers are not trustworthy:**"] + [f"- {f}" for f in findings]


def _metric_tables(metrics: Mapping[str, Any], where: str | None = None) -> list[str]:
    """The metric table and the subgroup table of one set; ``where`` (the dataset and kind)
    goes into both tables' first column header."""
    suffix = f" ({where})" if where else ""
    det = metrics.get("detection") or {}
    keep = (metrics.get("plan") or {}).get("keep_components")
    cut = (metrics.get("plan") or {}).get("min_score")
    kept = (f"; the mask drops components scoring below {cut:g}" if cut else "") + (
        f"; the mask keeps its {keep} highest-scoring component(s)" if keep else "")
    lines = [
        (
            f"{_fmt(metrics.get('n_cases'))} test images from {_fmt(metrics.get('n_patients'))} "
            f"patients; threshold {_fmt(metrics.get('threshold'))}{kept} (chosen on validation)."
        ),
        "",
        f"| metric{suffix} | value | 95% CI |",
        "|---|---|---|",
        f"| Dice, mean per image | {_fmt(metrics.get('dice_mean'))} | {_ci(metrics, 'dice_mean')} |",
        f"| IoU, mean per image | {_fmt(metrics.get('iou_mean'))} | {_ci(metrics, 'iou_mean')} |",
        f"| Dice, pooled | {_fmt(metrics.get('dice_pooled'))} | {_ci(metrics, 'dice_pooled')} |",
        f"| Sensitivity at 0.5 FP/image | {_fmt(det.get('sensitivity_at_0_5fp'))} | n/a |",
        f"| Sensitivity at 1 FP/image | {_fmt(det.get('sensitivity_at_1fp'))} | n/a |",
        f"| Sensitivity at 2 FP/image | {_fmt(det.get('sensitivity_at_2fp'))} | n/a |",
    ]
    subgroups = metrics.get("subgroups") or []
    if subgroups:
        lines += ["", f"| subgroup{suffix} | value | images | Dice mean | 95% CI |", "|---|---|---|---|---|"]
        for sg in subgroups:
            ci = sg.get("ci")
            rng = f"{_fmt(ci[0])} – {_fmt(ci[1])}" if ci else "n/a"
            lines.append(
                f"| {sg.get('group')} | {sg.get('value')} | {sg.get('n')} | "
                f"{_fmt(sg.get('dice_mean'))} | {rng} |"
            )
    return lines


def _evaluation_sections(sets: Sequence[EvaluatedSet], primary: str | None) -> list[str]:
    """A summary over every set, then in-domain and cross-dataset sections, one table per set."""
    lines = [
        "## Evaluation",
        "",
        (
            "*In-domain*: the internal test split (patients never trained or validated on) of each "
            "training dataset. *Cross-dataset*: held-out datasets the model never saw, scored "
            "zero-shot. The two are not comparable: expect lower cross-dataset figures."
        ),
        "",
        "| set | dataset | kind | images | patients | Dice, mean per image | 95% CI | Dice, pooled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in sets:
        m = e.metrics
        mark = " (primary)" if e.name == primary else ""
        lines.append(
            f"| {e.name}{mark} | {e.dataset} | {_KINDS.get(e.kind, e.kind)} | {_fmt(m.get('n_cases'))} | "
            f"{_fmt(m.get('n_patients'))} | {_fmt(m.get('dice_mean'))} | {_ci(m, 'dice_mean')} | "
            f"{_fmt(m.get('dice_pooled'))} |"
        )
    if primary:
        lines += ["", f"The champion/challenger gate compares the primary set, **{primary}**."]
    for kind, title in (("internal_test", "In-domain metrics (internal test split)"),
                        ("heldout", "Cross-dataset metrics (held-out datasets)")):
        chosen = [e for e in sets if e.kind == kind]
        if not chosen:
            continue
        lines += ["", f"## {title}"]
        for e in chosen:
            where = f"{e.dataset}, {_KINDS.get(e.kind, e.kind)}"
            lines += ["", f"### {e.dataset} — {e.name}", ""] + _metric_tables(e.metrics, where)
            lines += [""] + _leakage_lines(e.leakage_findings, f"training data vs {e.name}")
    return lines


def _synthetic_sources(sources: Mapping[str, str]) -> list[str]:
    """Datasets (of ``dataset → source URL``) whose source is the project's synthetic generator's
    output: a URL whose path holds one of the prefixes it writes under (``mammoseg synth`` and the
    demo: :data:`~mammoseg.layout.SYNTH_CBIS_PREFIX`, :data:`~mammoseg.layout.SYNTH_MIAS_PREFIX`)."""
    from urllib.parse import urlsplit

    from mammoseg.layout import SYNTH_CBIS_PREFIX, SYNTH_MIAS_PREFIX

    def synthetic(url: str) -> bool:
        path = urlsplit(url).path if "://" in url else url
        path = "/" + path.replace("\\", "/").strip("/") + "/"
        return any(f"/{p.strip('/')}/" in path for p in (SYNTH_CBIS_PREFIX, SYNTH_MIAS_PREFIX))

    return sorted(d for d, url in sources.items() if url and synthetic(str(url)))


def model_card(
    *,
    version: str,
    data: Sequence[DataSplitSummary],
    metrics: Mapping[str, Any],
    training_config: Mapping[str, Any],
    leakage_findings: Sequence[str] | None = None,
    extra_limitations: Sequence[str] = (),
    title: str = "mammoseg breast-lesion segmentation U-Net",
    evaluations: Sequence[EvaluatedSet] | None = None,
    primary: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> str:
    """MODEL_CARD.md text.

    ``sources``: dataset name → the source URL it was read from (training and held-out sets);
    data written by the project's synthetic generator (``mammoseg synth``, ``mammoseg demo``) is
    recognised by its prefix and the card says that its numbers mean nothing for real mammograms.

    With ``evaluations``, one section per evaluated set (in-domain and cross-dataset apart, every
    table naming its dataset), the ``primary`` set marked; ``metrics`` is then only used when
    ``evaluations`` is empty. Without it (one held-out set), ``metrics`` is
    ``EvaluationResult.to_dict()`` and ``leakage_findings`` the result of ``leakage_audit``
    (None = not run).
    """
    datasets = sorted({d.dataset for d in data} | {e.dataset for e in evaluations or ()})
    lines = [
        f"# {title} — version {version}",
        "",
        "## Intended use",
        "",
        (
            "Research and teaching: segmenting lesions (masses, calcification clusters) in "
            "mammograms to study methods and pipelines. **This is not a medical device.** It must "
            "not be used for diagnosis, screening or any decision about a patient."
        ),
        "",
        "## Data",
        "",
        "Splits are made by patient: all images of one patient are in one split.",
        "",
        "| dataset | split | images | patients | lesions |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {d.dataset} | {d.split} | {d.n_images} | {d.n_patients} | {_fmt(d.n_lesions)} |"
        for d in sorted(data, key=lambda d: (d.dataset, d.split))
    ]
    if evaluations:
        lines += [""] + _evaluation_sections(evaluations, primary)
    else:
        lines += [""] + _leakage_lines(leakage_findings)
        lines += ["", "## Held-out metrics", ""] + _metric_tables(metrics)
    defs = metrics.get("definitions") or next(
        (e.metrics.get("definitions") for e in evaluations or () if e.metrics.get("definitions")), {}
    )
    if defs:
        lines += ["", "### Definitions", ""] + [f"- *{k}*: {v}" for k, v in defs.items()]

    limits = [
        (
            "Public research datasets only; performance on other scanners, vendors, populations and "
            "screening settings (domain shift) is unknown and likely lower."
        ),
        "Confidence intervals reflect patient sampling only, not annotation noise or domain shift.",
    ]
    synthetic = sorted({d for d in datasets if d.startswith("synthetic")} | set(_synthetic_sources(sources or {})))
    if synthetic:
        every = set(synthetic) >= set(datasets) and bool(datasets)
        limits.append(
            f"{'All' if every else 'Part'} of the data is synthetic (made by mammoseg's generator: "
            f"{', '.join(synthetic)}): numbers on synthetic images say nothing about "
            "performance on real mammograms."
        )
    if any(d.startswith("mini-mias") for d in datasets):
        limits.append(
            "mini-MIAS lesions are circles (centre and radius), not contours: masks built from "
            "them are coarse, and Dice against them measures localisation more than shape."
        )
    if "cbis-ddsm" in datasets:
        limits.append("CBIS-DDSM is scanned film; its ROI outlines are often loose.")
    if any(d.startswith("cdd-cesm") for d in datasets):
        limits.append("CDD-CESM images here are 512x512 JPEG copies, resized from the originals.")
    limits += list(extra_limitations)
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in limits]
    lines += ["", "## Training", ""] + _training_lines(training_config)
    lines += ["", "The full configuration is in `training_config.json` beside the model.", ""]
    return "\n".join(lines)


def _round(v: Any) -> str:
    """A number as a person reads it: 3 significant digits (0.001, not 0.0010000000474974513)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return "n/a" if not math.isfinite(v) else f"{v:.3g}"


def _training_lines(config: Mapping[str, Any]) -> list[str]:
    """The training configuration as a table: architecture, loss, optimiser, epochs, the one
    decision threshold (the validation-chosen one; the monitoring metrics' cut-off is left out)."""
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    train = config.get("training") if isinstance(config.get("training"), Mapping) else {}
    history = config.get("history") if isinstance(config.get("history"), list) else []
    rows: list[tuple[str, str]] = []
    if model:
        norm = model.get("norm", "batch" if model.get("batch_norm", True) else "none")
        rows.append(("architecture", (
            f"U-Net, depth {_round(model.get('depth'))}, {_round(model.get('base_filters'))} base filters, "
            f"{norm} normalisation, dropout {_round(model.get('dropout'))}, input {_round(model.get('input_size'))} px"
            + (f", input normalisation {model['input_norm']}" if model.get("input_norm") not in (None, "none") else "")
        )))
    if train:
        loss = str(train.get("loss", "n/a"))
        if "focal" in loss:
            loss += (f" (focal α {_round(train.get('focal_alpha'))}, γ {_round(train.get('focal_gamma'))}"
                     + (f", Dice weight {_round(train.get('dice_weight'))})" if loss == "focal_dice" else ")"))
        rows += [
            ("loss", loss),
            ("optimiser", (
                f"learning rate {_round(train.get('learning_rate'))}, × {_round(train.get('lr_factor'))} after "
                f"{_round(train.get('lr_patience'))} epochs without improvement (down to {_round(train.get('min_learning_rate'))})"
            )),
            ("epochs", (
                f"at most {_round(train.get('epochs'))}, early stop after {_round(train.get('early_stopping_patience'))} "
                "epochs without improvement of validation Dice"
            )),
            ("batch", f"{_round(train.get('batch_size'))} images; lesion oversampling {_round(train.get('lesion_oversample'))}"),
            ("augmentation", "on" if train.get("augment") else "off"),
            ("seed", _round(train.get("seed"))),
        ]
    if history:
        val = [h.get("val_dice") for h in history if isinstance(h.get("val_dice"), int | float)]
        best = max(val) if val else None
        rows.append(("epochs run", f"{len(history)}; best validation Dice {_round(best) if best is not None else 'n/a'}"))
    if "threshold" in config:
        rows.append(("decision threshold", f"{_round(config['threshold'])} (chosen on the validation split)"))
    datasets = config.get("datasets") if isinstance(config.get("datasets"), Mapping) else {}
    if datasets:
        trained, held = ", ".join(datasets.get("train", [])) or "n/a", ", ".join(datasets.get("heldout", [])) or "none"
        rows.append(("datasets", f"trained on {trained}; held out {held}"))
    if config.get("run_id"):
        rows.append(("training run", f"`{config['run_id']}`"))
    known = {"model", "training", "history", "threshold", "datasets", "run_id", "primary_set"}
    rows += [(str(k), _round(v)) for k, v in config.items() if k not in known and not isinstance(v, Mapping | list)]
    if not rows:
        return ["Not recorded."]
    return ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
