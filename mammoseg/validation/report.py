"""Readable, JSON-friendly results of one suite run (no GX objects leak out of here).

Row-level expectations (column values, pairs, compound keys) report *which rows* broke them; the
report turns those into values of the suite's id column (``case_id``, or ``patient_id`` for the
splits suite) so a flow can quarantine exactly those cases and go on. Table-level failures
(missing column, empty table, an expectation that could not run at all) cannot be pinned on
cases: :meth:`ValidationReport.table_failures` lists them and a flow should stop on them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from mammoseg.validation.suites import describe_expectation, expectation_columns

#: At most this many distinct offending values are kept per expectation.
MAX_EXAMPLES = 5


def jsonable(value: Any) -> Any:
    """``value`` with numpy / pandas scalars, NA/NaN, tuples and sets turned into plain JSON types."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict.

    ``unexpected_count`` is ``None`` for table-level expectations. ``failing_positions`` are
    0-based row positions in the frame given to the runner; ``failing_ids`` the distinct
    non-empty id-column values of those rows.
    """

    name: str  # expectation type + column(s), e.g. "expect_column_values_to_be_in_set(pathology)"
    expectation_type: str
    columns: tuple[str, ...]
    success: bool
    description: str
    why: str | None = None
    row_level: bool = False
    unexpected_count: int | None = None
    unexpected_examples: tuple[Any, ...] = ()
    observed: Any = None
    error: str | None = None
    failing_positions: tuple[int, ...] = ()
    failing_ids: tuple[str, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expectation_type": self.expectation_type,
            "columns": list(self.columns),
            "success": bool(self.success),
            "description": self.description,
            "why": self.why,
            "row_level": self.row_level,
            "unexpected_count": self.unexpected_count,
            "unexpected_examples": jsonable(list(self.unexpected_examples)),
            "observed": jsonable(self.observed),
            "error": self.error,
            "failing_ids": list(self.failing_ids),
            "kwargs": jsonable(dict(self.kwargs)),
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of running one suite on one table."""

    suite: str
    success: bool
    results: list[ExpectationOutcome]
    evaluated_rows: int  # rows in the frame given to the runner (before any de-duplication)
    id_column: str | None = None
    evaluated_ids: int = 0  # distinct non-empty values of id_column in that frame
    data_docs_index: str | None = None
    run_name: str | None = None
    parameters: Mapping[str, float] = field(default_factory=dict)

    # -- what failed ------------------------------------------------------------------------
    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success]

    def table_failures(self) -> list[ExpectationOutcome]:
        """Failed expectations that name no rows (schema, row count, errors): quarantine cannot
        fix these, the run should stop."""
        return [r for r in self.results if not r.success and not r.row_level]

    def failing_ids(self) -> list[str]:
        """Sorted id-column values of every row that breaks a row-level expectation.

        Rows breaking an expectation that still *passed* (thanks to ``mostly``) count too:
        ``mostly`` decides whether the table may go on, not whether a bad row may.
        """
        ids: set[str] = set()
        for r in self.results:
            ids.update(r.failing_ids)
        return sorted(ids)

    def failing_case_ids(self) -> list[str]:
        """:meth:`failing_ids` for suites keyed by ``case_id`` (refuses the splits suite, whose
        ids are patients)."""
        if self.id_column != "case_id":
            raise ValueError(
                f"suite {self.suite!r} reports failures by {self.id_column!r}, not case_id; "
                "use failing_ids()"
            )
        return self.failing_ids()

    def failing_fraction(self) -> float:
        """Share of the evaluated ids that fail (0.0 for an empty table)."""
        return len(self.failing_ids()) / self.evaluated_ids if self.evaluated_ids else 0.0

    def failing_rows(self, df: pd.DataFrame) -> pd.Index:
        """Index labels of ``df``'s rows to quarantine: every row whose id is failing, plus failing
        rows without an id. ``df`` must be the frame that was validated (same length and order).
        """
        if len(df) != self.evaluated_rows:
            raise ValueError(
                f"this report is about a table of {self.evaluated_rows} rows, not {len(df)}"
            )
        mask = np.zeros(len(df), dtype=bool)
        for r in self.results:
            if r.failing_positions:
                mask[list(r.failing_positions)] = True
        ids = self.failing_ids()
        if ids and self.id_column is not None and self.id_column in df.columns:
            mask |= df[self.id_column].astype("string").isin(ids).fillna(False).to_numpy(dtype=bool)
        return df.index[mask]

    # -- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (numpy / pandas values converted)."""
        return {
            "suite": self.suite,
            "success": bool(self.success),
            "evaluated_rows": int(self.evaluated_rows),
            "id_column": self.id_column,
            "evaluated_ids": int(self.evaluated_ids),
            "failing_ids": self.failing_ids(),
            "failing_fraction": self.failing_fraction(),
            "data_docs_index": self.data_docs_index,
            "run_name": self.run_name,
            "parameters": jsonable(dict(self.parameters)),
            "statistics": {
                "evaluated_expectations": len(self.results),
                "successful_expectations": sum(r.success for r in self.results),
            },
            "results": [r.to_dict() for r in self.results],
        }

    def summary_text(self, *, max_ids: int = 5) -> str:
        """A readable pass/fail table: one line per expectation (✓/✗, rule, count, examples)."""
        ok = sum(r.success for r in self.results)
        head = (
            f"{'✓' if self.success else '✗'} suite {self.suite}: "
            f"{'PASSED' if self.success else 'FAILED'} — {ok}/{len(self.results)} expectations met "
            f"on {self.evaluated_rows} rows"
        )
        if self.id_column:
            n = len(self.failing_ids())
            head += f"; {n} of {self.evaluated_ids} {self.id_column}s failing"
        lines = [head]
        width = min(80, max((len(r.description) for r in self.results), default=0))
        for r in self.results:
            mark = "✓" if r.success else "✗"
            text = (
                r.description if len(r.description) <= width else r.description[: width - 1] + "…"
            )
            detail: list[str] = []
            if r.error:
                detail.append(f"error: {r.error}")
            elif r.unexpected_count:
                detail.append(f"{r.unexpected_count} unexpected")
            elif r.observed is not None and not r.success:
                detail.append(f"observed {_short(r.observed)}")
            examples = [e for e in r.unexpected_examples if e is not None]
            if examples and not r.error:
                detail.append("e.g. " + ", ".join(_short(e) for e in examples))
            if r.failing_ids:
                shown = ", ".join(r.failing_ids[:max_ids])
                more = f" (+{len(r.failing_ids) - max_ids})" if len(r.failing_ids) > max_ids else ""
                detail.append(f"{self.id_column}: {shown}{more}")
            lines.append(f"  {mark} {text:<{width}}  {'; '.join(detail)}".rstrip())
        if self.data_docs_index:
            lines.append(f"  Data Docs: {self.data_docs_index}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(jsonable(value)) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------
# From GX validation results (duck-typed: no GX import here)
# ----------------------------------------------------------------------------------------------


def _examples(result: Mapping[str, Any]) -> tuple[Any, ...]:
    counts = result.get("partial_unexpected_counts")
    if counts:
        values = [c.get("value") for c in counts]
    else:
        values = list(result.get("partial_unexpected_list") or [])
    out: list[Any] = []
    for v in values:
        jv = jsonable(v)
        if jv not in out:
            out.append(jv)
        if len(out) == MAX_EXAMPLES:
            break
    return tuple(out)


def _table_examples(expectation_type: str, result: Mapping[str, Any]) -> tuple[Any, ...]:
    details = result.get("details") or {}
    mismatched = details.get("mismatched") if isinstance(details, Mapping) else None
    if isinstance(mismatched, Mapping):
        out = [f"missing: {c}" for c in mismatched.get("missing") or []]
        out += [f"unexpected: {c}" for c in mismatched.get("unexpected") or []]
        return tuple(out[:MAX_EXAMPLES])
    return ()


def outcome_from_gx(
    gx_result: Any, frame: pd.DataFrame, id_column: str | None
) -> ExpectationOutcome:
    """One GX ``ExpectationValidationResult`` → :class:`ExpectationOutcome`.

    ``frame`` is the validated frame, indexed by the 0-based row position in the caller's table
    (GX reports failing rows by index label).
    """
    config = gx_result.expectation_config
    etype = str(config.type)
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
    columns = expectation_columns(kwargs)
    name = f"{etype}({', '.join(columns)})" if columns else etype
    description = getattr(config, "description", None) or describe_expectation(etype, kwargs)
    why = (config.meta or {}).get("why")
    result: Mapping[str, Any] = gx_result.result or {}
    info = gx_result.exception_info or {}
    error = None
    if isinstance(info, Mapping):
        if info.get("raised_exception"):
            error = str(info.get("exception_message") or "expectation could not run")
        else:  # {metric id: {...}} when a metric failed
            for sub in info.values():
                if isinstance(sub, Mapping) and sub.get("raised_exception"):
                    error = str(sub.get("exception_message") or "expectation could not run")
                    break
    row_level = "unexpected_index_list" in result and error is None
    positions: tuple[int, ...] = ()
    ids: tuple[str, ...] = ()
    if row_level:
        raw = [p for p in result.get("unexpected_index_list") or [] if not isinstance(p, Mapping)]
        positions = tuple(sorted({int(p) for p in raw}))
        if positions and id_column is not None and id_column in frame.columns:
            values = frame.loc[list(positions), id_column].dropna()
            ids = tuple(sorted({str(v) for v in values if str(v)}))
    return ExpectationOutcome(
        name=name,
        expectation_type=etype,
        columns=columns,
        success=bool(gx_result.success) and error is None,
        description=description,
        why=why,
        row_level=row_level,
        unexpected_count=int(result["unexpected_count"]) if row_level else None,
        unexpected_examples=_examples(result) if row_level else _table_examples(etype, result),
        observed=jsonable(result.get("observed_value")),
        error=error,
        failing_positions=positions,
        failing_ids=ids,
        kwargs=jsonable(kwargs),
    )


def build_report(
    *,
    suite: str,
    gx_results: Iterable[Any],
    order: Sequence[str | None],
    frame: pd.DataFrame,
    evaluated_rows: int,
    evaluated_ids: int,
    id_column: str | None,
    data_docs_index: str | None,
    run_name: str | None,
    parameters: Mapping[str, float],
) -> ValidationReport:
    """Assemble a report; ``order`` lists the expectation ids in suite order (GX may reorder)."""
    rank = {eid: i for i, eid in enumerate(order)}
    results = sorted(gx_results, key=lambda r: rank.get(r.expectation_config.id, len(rank)))
    outcomes = [outcome_from_gx(r, frame, id_column) for r in results]
    return ValidationReport(
        suite=suite,
        success=all(o.success for o in outcomes),
        results=outcomes,
        evaluated_rows=evaluated_rows,
        id_column=id_column,
        evaluated_ids=evaluated_ids,
        data_docs_index=data_docs_index,
        run_name=run_name,
        parameters=dict(parameters),
    )
