"""Subflow results as plain values: no ``flow_run`` task inputs.

Prefect 3.9 links a subflow's return value *and its fields* (one level deep, by object id) to the
subflow's run in the calling flow (``prefect.utilities.engine.link_state_to_result``). Every
later task that receives one of those objects, a URI field or even the ``store_url`` string the
subflow echoed back, records it as an input of type ``flow_run``. The default UI cannot draw
that type (the browser console says ``Invalid TaskInputResponse``): the parent run's *Task
Runs* tab lists nothing and those tasks' pages stay blank.

:func:`untracked` drops exactly those links, so tasks record subflow-derived arguments as plain
values (the subflow itself stays in the run graph as a subflow node). Task results are not
touched: task-to-task lineage (``task_run`` inputs) is kept.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def untracked(result: T) -> T:
    """``result`` (a subflow's return value), unlinked from its subflow run in the current flow
    run's dependency tracking; returned unchanged (not copied). Outside a flow run: a no-op."""
    from prefect.context import FlowRunContext
    from prefect.utilities.collections import visit_collection
    from prefect.utilities.engine import RunType

    ctx = FlowRunContext.get()
    if ctx is None:
        return result
    links = ctx.run_results

    def drop(obj: object) -> None:
        entry = links.get(id(obj))
        if entry is not None and entry[1] == RunType.FLOW_RUN:
            del links[id(obj)]

    # the same depth link_state_to_result links at: the object and its direct fields
    visit_collection(result, visit_fn=drop, return_data=False, max_depth=1)
    return result
