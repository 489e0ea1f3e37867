"""PACS tasks: segment one arrived study and store its DICOM SEGs back (STOW-RS)."""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from mammoseg.settings import get_settings, require_pseudonym_key
from tasks.retry import IO_RETRIES


class NoModel(LookupError):
    """No model was given and the pipeline store has no champion (models/CURRENT)."""


class StudyInference(BaseModel):
    """What one infer-on-arrival run did (pseudonymous ids only)."""

    run_id: str
    study_id: str
    model_uri: str
    model_version: str | None
    segmented: int
    already_segmented: int
    quarantined: int
    quarantine: list[dict[str, str]]
    report_uri: str


@task(name="segment-study", **IO_RETRIES)
def segment_arrived_study(
    *, pacs_url: str, orthanc_study: str, store_url: str, run_id: str, model_uri: str | None = None
) -> StudyInference:
    """Champion (or ``model_uri``) on every not-yet-segmented image of the study; SEGs into the
    PACS, lesion lists and the run report (``runs/<run>/report-infer.json``) into the store.

    Retried only on I/O faults (PACS or store unreachable); the work is idempotent, so a retry
    stores no second SEG."""
    from mammoseg.arrival import segment_study
    from mammoseg.inference import load_predictor
    from mammoseg.layout import report_key
    from mammoseg.pacs import Pacs
    from mammoseg.prediction import model_version
    from mammoseg.publish import current_model
    from mammoseg.storage import open_store

    settings = get_settings()
    key = require_pseudonym_key(settings)
    store = open_store(store_url, settings)
    if model_uri is None:
        champion = current_model(store)
        if champion is None:
            raise NoModel(f"the store {store_url} has no champion model (models/CURRENT)")
        model_uri = champion.model_uri
    predictor = load_predictor(model_uri, settings)
    version = model_version(model_uri)
    pacs = Pacs(pacs_url, settings)
    outcome = segment_study(
        pacs, pacs.study_uid(orthanc_study), predictor, model_version=version, pseudonym_key=key,
        seg_patient=settings.seg_patient_module, store=store, run_id=run_id,
    )
    doc = outcome.to_dict() | {"run_id": run_id, "model_uri": model_uri}
    info = store.write_bytes(report_key(run_id, "infer"), json.dumps(doc, indent=2).encode(), "application/json")
    quarantine = [{"case_id": i.case_id, "reason": i.reason} for i in outcome.instances if i.status == "quarantined"]
    logger = get_run_logger()
    logger.info(
        "study %s, model %s: %d image(s) segmented, %d already segmented, %d quarantined",
        outcome.study_id, version or model_uri, outcome.count("segmented"), outcome.count("already-segmented"),
        len(quarantine),
    )
    for q in quarantine:
        logger.warning("quarantined %s: %s", q["case_id"], q["reason"])
    rows = "\n".join(
        f"| {i.case_id} | {i.status} | {i.n_lesions} | {i.lesion_pixels} | {i.reason} |" for i in outcome.instances
    )
    create_markdown_artifact(
        key="infer-on-arrival",
        markdown=f"## Study {outcome.study_id}, model {version or 'unversioned'}\n\n"
                 "| case | status | lesions | lesion px | reason |\n|---|---|---|---|---|\n" + rows,
        description="DICOM SEGs stored back into the PACS",
    )
    return StudyInference(
        run_id=run_id, study_id=outcome.study_id, model_uri=model_uri, model_version=version,
        segmented=outcome.count("segmented"), already_segmented=outcome.count("already-segmented"),
        quarantined=len(quarantine), quarantine=quarantine, report_uri=info.uri,
    )
