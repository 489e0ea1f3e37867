"""Inference on arrival: a study became stable in the PACS → the champion segments it → DICOM
SEGs are stored back into the PACS (STOW-RS). The flow the ``infer-on-arrival`` deployment runs.

Parameters come from the triggering ``mammoseg.study.arrived`` event (see
:mod:`mammoseg.events.pacs_watcher`): the PACS URL and Orthanc's study id (a hash, not a DICOM
UID). The store and, by default, the PACS come from the settings of the serving process.
"""

from __future__ import annotations

from prefect import flow

from mammoseg.layout import new_run_id
from mammoseg.settings import get_settings
from tasks.pacs import StudyInference, segment_arrived_study


class NotConfigured(ValueError):
    """No PACS URL: the event carried none and MAMMOSEG_PACS_URL is unset."""


@flow(name="infer-on-arrival", flow_run_name="infer-{orthanc_study}")
def infer_on_arrival_flow(
    orthanc_study: str,
    pacs_url: str | None = None,
    store_url: str | None = None,
    model_uri: str | None = None,
) -> StudyInference:
    """Segment one arrived study with the champion (or ``model_uri``) and store the SEGs back."""
    s = get_settings()
    pacs = pacs_url or s.pacs_url
    if not pacs:
        raise NotConfigured("no PACS: the event carried none and MAMMOSEG_PACS_URL is unset")
    return segment_arrived_study(
        pacs_url=pacs, orthanc_study=orthanc_study, store_url=store_url or s.store_url,
        run_id=new_run_id(), model_uri=model_uri,
    )
