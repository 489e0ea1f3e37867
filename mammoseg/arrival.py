"""Inference on arrival: segment every image of one PACS study and store the DICOM SEGs back.

:func:`segment_study` is what the ``infer-on-arrival`` flow runs for a study that Orthanc has
announced as stable. For each instance of the study's image series (QIDO-RS; SEG, SR, PR and
KO series are never fetched):

1. **idempotency** — the SEG's Series Instance UID is a function of (source instance, model
   version) (:func:`mammoseg.seg.seg_series_uid`); when the study already holds it, the
   instance is ``already-segmented`` and nothing is fetched or stored. A re-announced study, a
   retried task or a second watcher therefore never produces a second SEG;
2. WADO-RS of the instance, prediction with the model's plan in the image's own geometry
   (:func:`mammoseg.prediction.predict_image`), the SEG built with highdicom;
3. STOW-RS of the SEG into the PACS, and the lesion list (and a copy of the SEG) into the
   pipeline store under ``runs/<run>/inference/<case>/``.

An instance that cannot be used (not decodable, no breast, a SEG highdicom refuses) is
**quarantined** with its one-line reason and the study goes on; the PACS is never modified
except for the SEGs added. A PACS outage (:class:`~mammoseg.pacs.PacsUnavailable`) propagates,
so the calling task retries it. Cases are named by keyed pseudonyms only (never a UID).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from mammoseg.ids import case_pseudonym, pseudonym
from mammoseg.layout import inference_key
from mammoseg.seg import PatientModule, seg_series_uid

if TYPE_CHECKING:
    from mammoseg.inference import Predictor
    from mammoseg.pacs import Pacs
    from mammoseg.settings import Settings
    from mammoseg.storage import ObjectStore

Status = Literal["segmented", "already-segmented", "quarantined"]


@dataclass(frozen=True)
class InstanceOutcome:
    case_id: str  # keyed pseudonym of the source instance
    status: Status
    reason: str = ""
    lesion_pixels: int = 0
    n_lesions: int = 0
    lesions_uri: str | None = None


@dataclass(frozen=True)
class StudyOutcome:
    study_id: str  # keyed pseudonym of the study
    model_version: str | None
    instances: tuple[InstanceOutcome, ...]

    def count(self, status: Status) -> int:
        return sum(1 for i in self.instances if i.status == status)

    def to_dict(self) -> dict[str, object]:
        return {
            "study_id": self.study_id,
            "model_version": self.model_version,
            "segmented": self.count("segmented"),
            "already_segmented": self.count("already-segmented"),
            "quarantined": self.count("quarantined"),
            "instances": [asdict(i) for i in self.instances],
        }


def study_pseudonym(key: str, study_uid: str) -> str:
    return pseudonym(key, "pacs", "study", study_uid, prefix="st-")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def segment_study(
    pacs: Pacs,
    study_uid: str,
    predictor: Predictor,
    *,
    model_version: str | None,
    pseudonym_key: str,
    seg_patient: PatientModule = "pseudonymous",
    threshold: float | None = None,
    store: ObjectStore | None = None,
    run_id: str | None = None,
) -> StudyOutcome:
    """Segment the study's images not yet segmented by ``model_version``; see the module doc."""
    from mammoseg.prediction import predict_image

    cut = predictor.plan.threshold if threshold is None else threshold
    existing = {uid for uid, _ in pacs.series(study_uid)}
    outcomes: list[InstanceOutcome] = []
    for series_uid in pacs.image_series(study_uid):
        for sop_uid in pacs.instances(study_uid, series_uid):
            case_id = case_pseudonym(pseudonym_key, "pacs", sop_uid)
            if seg_series_uid(sop_uid, model_version) in existing:
                outcomes.append(InstanceOutcome(case_id, "already-segmented"))
                continue
            data = pacs.retrieve(study_uid, series_uid, sop_uid)
            try:
                result = predict_image(
                    predictor, data, f"{case_id}.dcm", threshold=cut, version=model_version,
                    seg_patient=seg_patient, pseudonym_key=pseudonym_key,
                )
            except (ValueError, MemoryError) as exc:  # bad data: quarantined, the study goes on
                outcomes.append(InstanceOutcome(case_id, "quarantined", reason=_one_line(exc)))
                continue
            assert result.seg is not None  # the input is DICOM
            pacs.store(result.seg.data)
            existing.add(result.seg.series_uid)
            lesions_uri = None
            if store is not None and run_id is not None:
                doc = json.dumps(result.report, indent=2, allow_nan=False).encode("utf-8")
                info = store.write_bytes(inference_key(run_id, case_id, "lesions.json"), doc, "application/json")
                store.write_bytes(inference_key(run_id, case_id, "seg.dcm"), result.seg.data, "application/dicom")
                lesions_uri = info.uri
            outcomes.append(InstanceOutcome(
                case_id, "segmented", lesion_pixels=result.seg.lesion_pixels, n_lesions=result.n_lesions,
                lesions_uri=lesions_uri,
            ))
    return StudyOutcome(study_pseudonym(pseudonym_key, study_uid), model_version, tuple(outcomes))


class NoModel(LookupError):
    """No model was given and the pipeline store has no champion (models/CURRENT)."""


@dataclass(frozen=True)
class ArrivalRun:
    """One infer-on-arrival run: what :func:`segment_study` did with which model, and where its
    report (``runs/<run>/report-infer.json``) went."""

    outcome: StudyOutcome
    model_uri: str
    report_uri: str

    @property
    def quarantine(self) -> list[dict[str, str]]:
        """The quarantined instances: case id and reason."""
        return [{"case_id": i.case_id, "reason": i.reason} for i in self.outcome.instances if i.status == "quarantined"]

    def markdown(self) -> str:
        """One table row per instance (pseudonymous ids only), under the study and model."""
        rows = "\n".join(
            f"| {i.case_id} | {i.status} | {i.n_lesions} | {i.lesion_pixels} | {i.reason} |"
            for i in self.outcome.instances
        )
        return (f"## Study {self.outcome.study_id}, model {self.outcome.model_version or 'unversioned'}\n\n"
                "| case | status | lesions | lesion px | reason |\n|---|---|---|---|---|\n" + rows)


def segment_arrived_study(
    *, pacs_url: str, orthanc_study: str, store_url: str, run_id: str, model_uri: str | None, settings: Settings,
) -> ArrivalRun:
    """The champion of the store at ``store_url`` (or ``model_uri``) on the Orthanc study
    ``orthanc_study``: :func:`segment_study`, then the run's report. :class:`NoModel` when no
    model is given and the store has none."""
    from mammoseg.catalog import RunCatalog
    from mammoseg.inference import load_predictor
    from mammoseg.pacs import Pacs
    from mammoseg.prediction import model_version
    from mammoseg.publish import current_model
    from mammoseg.settings import require_pseudonym_key

    key = require_pseudonym_key(settings)
    run = RunCatalog.open(store_url, run_id, settings)
    if model_uri is None:
        champion = current_model(run.store)
        if champion is None:
            raise NoModel(f"the store {store_url} has no champion model (models/CURRENT)")
        model_uri = champion.model_uri
    predictor = load_predictor(model_uri, settings)
    pacs = Pacs(pacs_url, settings)
    outcome = segment_study(
        pacs, pacs.study_uid(orthanc_study), predictor, model_version=model_version(model_uri), pseudonym_key=key,
        seg_patient=settings.seg_patient_module, store=run.store, run_id=run_id,
    )
    report_uri = run.write_inference_report(outcome.to_dict() | {"run_id": run_id, "model_uri": model_uri})
    return ArrivalRun(outcome=outcome, model_uri=model_uri, report_uri=report_uri)
