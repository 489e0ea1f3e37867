"""The validation gate: which cases a GX report quarantines, and when the whole run stops.

* A failure that names no rows (a missing column, an empty table) stops the run: quarantine
  cannot fix it.
* Otherwise every case named by a failing row goes to quarantine with the rules it broke, and
  the run goes on with the rest, unless more than ``max_fraction`` of the cases fail.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from mammoseg.validation import ValidationReport


@dataclass(frozen=True)
class GateDecision:
    reasons: dict[str, str] = field(default_factory=dict)  # case_id → readable reason
    stop_reason: str | None = None
    failing_fraction: float = 0.0

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None


def decide(report: ValidationReport, *, max_fraction: float) -> GateDecision:
    broken = report.table_failures()
    if broken:
        names = "; ".join(f"{r.description}" + (f" ({r.error})" if r.error else "") for r in broken)
        return GateDecision(stop_reason=f"suite {report.suite!r} failed on the table as a whole: {names}")
    per_case: dict[str, list[str]] = defaultdict(list)
    for outcome in report.results:
        for case_id in outcome.failing_ids:
            per_case[case_id].append(outcome.description)
    reasons = {c: f"{report.suite}: " + "; ".join(sorted(set(r))) for c, r in sorted(per_case.items())}
    fraction = report.failing_fraction()
    stop = None
    if fraction > max_fraction:
        stop = (
            f"{len(reasons)} of {report.evaluated_ids} cases ({fraction:.0%}) fail suite "
            f"{report.suite!r}, above the limit of {max_fraction:.0%} (MAMMOSEG_QUARANTINE_MAX_FRACTION)"
        )
    return GateDecision(reasons=reasons, stop_reason=stop, failing_fraction=fraction)
