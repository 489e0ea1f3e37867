"""Validate: the GX metadata suite as a gate in front of preprocessing."""

from __future__ import annotations

from prefect import get_run_logger, task
from pydantic import BaseModel

from mammoseg.catalog import RunCatalog
from mammoseg.settings import get_settings
from mammoseg.validation.gates import MetadataGate, upload_folder
from tasks.retry import IO_RETRIES
from tasks.states import EXPECTATIONS_FAILED, completed_as

__all__ = ["GateOutcome", "metadata_gate", "upload_folder"]


class GateOutcome(BaseModel):
    run_id: str
    suite: str
    success: bool
    validated_uri: str | None
    report_uri: str
    data_docs_index: str | None
    data_docs_uri: str | None
    cases_in: int
    cases_passed: int
    cases_quarantined: int
    stop_reason: str | None = None
    reused_from: str | None = None  # the run whose passed validation of the same table was reused


@task(name="gx-metadata-gate", **IO_RETRIES)
def metadata_gate(lesions_uri: str, store_url: str, run_id: str) -> GateOutcome:
    """Run the ``lesion_metadata`` suite; quarantine failing cases or stop the run."""
    from mammoseg.validation.gates import metadata_gate as run_gate

    settings = get_settings()
    run = RunCatalog.open(store_url, run_id, settings)
    gate = run_gate(run, lesions_uri, max_fraction=settings.quarantine_max_fraction,
                    data_docs_dir=settings.work_dir / "runs" / run_id / "data_docs")
    _log_gate(gate)
    checked = gate.checked
    outcome = GateOutcome(
        run_id=run_id, suite=checked.suite, success=checked.success, validated_uri=gate.validated_uri,
        report_uri=checked.report_uri, data_docs_index=checked.data_docs_index, data_docs_uri=checked.data_docs_uri,
        cases_in=gate.cases_in, cases_passed=gate.cases_passed, cases_quarantined=len(gate.records),
        stop_reason=checked.decision.stop_reason, reused_from=checked.reused_from,
    )
    if checked.success:
        return outcome
    return completed_as(outcome, EXPECTATIONS_FAILED, f"{len(gate.records)} case(s) quarantined")


def _log_gate(gate: MetadataGate) -> None:
    """The gate's verdict, the suite's summary and each quarantined case, in the task's log."""
    logger = get_run_logger()
    checked = gate.checked
    if checked.reused_from is not None:
        logger.info("GX lesion_metadata: passed (this exact table passed in run %s; result reused, suite not re-run)",
                    checked.reused_from)
        for line in checked.summary_text.splitlines():
            logger.info(line)
        return
    # a failed suite is a warning (its cases are quarantined, the run goes on), not news
    log = logger.info if checked.success else logger.warning
    log("GX lesion_metadata: %s", "passed" if checked.success else "FAILED")
    for line in checked.summary_text.splitlines():
        log(line)
    for r in gate.records:
        logger.warning("quarantined at validation: case=%s %s", r.case_id, r.reason)
    if checked.decision.stopped:
        logger.error("gate closed: %s", checked.decision.stop_reason)
