"""The `infer-on-arrival` deployment's trigger, as built (no server): one run per study of the
configured PACS, parameters from the study event only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mammoseg.settings import Settings


def test_trigger_is_reactive_per_study_of_the_configured_pacs() -> None:
    from prefect.events.schemas.automations import Posture

    from flows.deployments import (
        PACS_DEBOUNCE_S,
        STUDY_ARRIVED,
        build_deployments,
        study_arrived_trigger,
    )

    trig = study_arrived_trigger(Settings(pacs_url="dicomweb://pacs.local:8042/dicom-web/"))
    assert trig.expect == {STUDY_ARRIVED} and trig.posture == Posture.Reactive and trig.threshold == 1
    assert trig.for_each == {"prefect.resource.id"} and trig.within == timedelta(seconds=PACS_DEBOUNCE_S)
    assert trig.match.root == {"mammoseg.pacs_url": "dicomweb://pacs.local:8042/dicom-web"}
    assert set(trig.parameters) == {"pacs_url", "orthanc_study"}
    assert [d.name for d in build_deployments(Settings())] == ["retrain-weekly", "new-data"]
    names = [d.name for d in build_deployments(Settings(pacs_url="dicomweb://pacs.local:8042/dicom-web"))]
    assert names == ["retrain-weekly", "new-data", "infer-on-arrival"]


def test_the_watcher_event_fills_the_trigger_parameters_and_carries_no_uid() -> None:
    from flows.deployments import STUDY_PARAMETERS
    from mammoseg.events.pacs_watcher import study_event

    name, resource, payload, event_id = study_event(
        "dicomweb://pacs.local:8042/dicom-web", "3aefbd05-383ca331-201f9d69-45b59316-87276e56", 17,
        key="k", event_time=datetime(2026, 1, 2, tzinfo=UTC))
    assert name == "mammoseg.study.arrived"
    for param, template in STUDY_PARAMETERS.items():
        label = template.split("'")[1]
        assert label in resource, param
    assert resource["prefect.resource.name"].startswith("st-")
    again = study_event("dicomweb://pacs.local:8042/dicom-web", "3aefbd05-383ca331-201f9d69-45b59316-87276e56", 17,
                        key="k", event_time=datetime(2026, 1, 3, tzinfo=UTC))
    assert again[3] == event_id  # the same change announced twice: one id, Prefect drops the repeat
    assert payload == {"orthanc_study": "3aefbd05-383ca331-201f9d69-45b59316-87276e56", "change_seq": 17,
                       "event_time": "2026-01-02T00:00:00+00:00"}
