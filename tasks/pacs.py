"""PACS tasks: segment one arrived study and store its DICOM SEGs back (STOW-RS)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from mammoseg.arrival import ArrivalRun, NoModel
from mammoseg.settings import get_settings
from tasks.retry import IO_RETRIES

__all__ = ["NoModel", "StudyInference", "segment_arrived_study"]


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
    from mammoseg import arrival

    done = arrival.segment_arrived_study(pacs_url=pacs_url, orthanc_study=orthanc_study, store_url=store_url,
                                         run_id=run_id, model_uri=model_uri, settings=get_settings())
    _log_study(done)
    create_markdown_artifact(
        key="infer-on-arrival", markdown=done.markdown(), description="DICOM SEGs stored back into the PACS"
    )
    outcome = done.outcome
    return StudyInference(
        run_id=run_id, study_id=outcome.study_id, model_uri=done.model_uri, model_version=outcome.model_version,
        segmented=outcome.count("segmented"), already_segmented=outcome.count("already-segmented"),
        quarantined=len(done.quarantine), quarantine=done.quarantine, report_uri=done.report_uri,
    )


def _log_study(done: ArrivalRun) -> None:
    logger = get_run_logger()
    outcome = done.outcome
    logger.info(
        "study %s, model %s: %d image(s) segmented, %d already segmented, %d quarantined",
        outcome.study_id, outcome.model_version or done.model_uri, outcome.count("segmented"),
        outcome.count("already-segmented"), len(done.quarantine),
    )
    for q in done.quarantine:
        logger.warning("quarantined %s: %s", q["case_id"], q["reason"])
