"""Texts the Prefect UI shows for the service: the automation and the schedule say what they do."""

from __future__ import annotations

from flows.deployments import build_deployments, debounce_description, new_data_trigger
from mammoseg.settings import get_settings


def test_debounce_description_in_words() -> None:
    one = debounce_description(1, 60)
    assert "no further upload arrives within 60 s" in one and "fewer than 1" not in one
    assert "fewer than 3 further uploads arrive within 10 s" in debounce_description(3, 10)
    trigger = new_data_trigger(get_settings(trigger_threshold=1, trigger_within_s=30))
    assert trigger.description == debounce_description(1, 30)


def test_weekly_schedule_names_its_time_zone() -> None:
    weekly = build_deployments(get_settings(retrain_cron="0 3 * * 1"))[0]
    assert weekly.description.startswith("On cron `0 3 * * 1` in UTC")
    assert [s.schedule.timezone for s in weekly.schedules] == ["UTC"]
