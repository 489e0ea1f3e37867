"""Truthful final states: a run that quarantined cases, or whose expectations failed, says so in
the Prefect UI's run lists and graph without failing (a ``Completed`` state with its own name;
the caller still gets the plain return value)."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

QUARANTINED = "Quarantined"
EXPECTATIONS_FAILED = "Expectations failed"


def completed_as(value: T, name: str | None, message: str | None = None) -> Any:
    """``value`` itself when ``name`` is None, else a ``Completed`` state named ``name`` that
    carries ``value`` (Prefect makes it the run's final state and returns ``value`` to the
    caller). ``message`` is shown beside the state name: keep it free of source keys."""
    if name is None:
        return value
    from prefect.states import Completed

    return Completed(name=name, message=message, data=value)


def unwrap(value: Any) -> Any:
    """What a task returned, called directly in a flow: Prefect hands back the named state itself
    (``Completed(name=...)``), so take its value; anything else is returned as is."""
    from prefect.states import State

    return value.result() if isinstance(value, State) else value
