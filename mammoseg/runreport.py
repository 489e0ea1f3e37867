"""Quarantine records and the run report.

A quarantined case is never deleted or modified at its source: the record says which stage
refused it and why, and the run goes on with the rest. The report counts everything so nothing
disappears silently: ``found = ingested + quarantined at ingest``, and so on down the stages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mammoseg.layout import quarantine_key, report_key
from mammoseg.storage import ObjectNotFound, ObjectStore

#: ``skipped``: metadata rows whose image is not in the store (a subset, a held-back part) or that a
#: dataset selection leaves out: counted and recorded, but not bad input, so they do not count
#: against the quarantine gate.
STAGES = ("skipped", "ingest", "validate", "preprocess", "pairing")

#: The quarantine stages a stage flow's own report covers (``report-<stage>.json``).
REPORT_STAGES: dict[str, tuple[str, ...]] = {
    "ingest": ("skipped", "ingest"),
    "preprocess": ("preprocess", "pairing"),
}


@dataclass(frozen=True)
class QuarantineRecord:
    """One refused case (or CSV row / object when no case could be formed)."""

    stage: str
    reason: str
    case_id: str | None = None
    source: str | None = None  # object key or CSV row, for the operator; never DICOM header data

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def redact(text: str, replacements: dict[str, str]) -> str:
    """Replace source object keys in a message (longest first) so it names no source object."""
    for key in sorted(replacements, key=len, reverse=True):
        text = text.replace(key, replacements[key])
    return text


def write_quarantine(
    store: ObjectStore, run_id: str, stage: str, records: list[QuarantineRecord]
) -> str:
    """Write one stage's records (JSON lines, possibly empty) and return the object URI."""
    body = "".join(r.to_json() + "\n" for r in records).encode()
    return store.write_bytes(quarantine_key(run_id, stage), body, "application/x-ndjson").uri


def read_quarantine(
    store: ObjectStore, run_id: str, stages: tuple[str, ...] = STAGES
) -> list[QuarantineRecord]:
    out: list[QuarantineRecord] = []
    for stage in stages:
        try:
            text = store.read_bytes(quarantine_key(run_id, stage)).decode()
        except ObjectNotFound:
            continue
        out += [QuarantineRecord(**json.loads(line)) for line in text.splitlines() if line.strip()]
    return out


@dataclass
class RunReport:
    """What a run found, kept, refused and produced. Pseudonymous case ids only.

    ``stage`` None: the data pipeline's report (``report.json``); ``ingest`` / ``preprocess``: the
    report of that stage flow alone (``report-<stage>.json``, see :data:`REPORT_STAGES`). A
    preprocess report counts the cases of its lesion table as ``cases_found``:
    ``found = preprocessed + quarantined (preprocess + pairing)``.
    """

    run_id: str
    dataset: str
    source_url: str
    store_url: str
    objects_found: int = 0
    csv_rows: int = 0
    cases_found: int = 0
    cases_ingested: int = 0
    cases_validated: int = 0
    cases_preprocessed: int = 0
    preprocess_computed: int = 0
    preprocess_cached: int = 0
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    gate: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None

    def quarantine_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in STAGES}
        for r in self.quarantined:
            counts[r.stage] = counts.get(r.stage, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The shareable report: quarantine *reasons* by case id; the source keys stay in the
        run's ``quarantine/*.jsonl`` next to the lesion tables (the source index)."""
        d = asdict(self)
        for q in d["quarantined"]:
            q.pop("source", None)
        d["quarantine_counts"] = self.quarantine_counts()
        d["quarantined_total"] = len(self.quarantined)
        if self.stage is None:  # the data pipeline's report keeps its fields as they were
            d.pop("stage")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        """A report as :meth:`to_dict` wrote it (the derived counts are recomputed)."""
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["quarantined"] = [QuarantineRecord(**q) for q in d.get("quarantined", [])]
        return cls(**fields)

    @classmethod
    def load(cls, store: ObjectStore, key: str) -> RunReport:
        return cls.from_dict(json.loads(store.read_bytes(key)))

    def save(self, store: ObjectStore) -> str:
        body = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str).encode()
        return store.write_bytes(report_key(self.run_id, self.stage), body, "application/json").uri

    def markdown(self, link: Callable[[str], str | None] | None = None) -> str:
        """The report as Markdown; ``link`` maps an output URI to a URL a browser can open (the
        output becomes a link) or None (the URI is shown as text)."""
        q = self.quarantine_counts()
        title = f"# mammoseg run `{self.run_id}` — {self.dataset}"
        header = ["", "| stage | count |", "|---|---:|"]
        if self.stage == "ingest":
            lines = [
                f"{title} (ingest)", *header,
                f"| objects found at source | {self.objects_found} |",
                f"| cases (images) found | {self.cases_found} |",
                f"| cases ingested | {self.cases_ingested} |",
                f"| skipped (image not in the store, or outside the selection) | {q['skipped']} |",
                f"| quarantined at ingest | {q['ingest']} |",
            ]
        elif self.stage == "preprocess":
            lines = [
                f"{title} (preprocess)", *header,
                f"| cases in the lesion table | {self.cases_found} |",
                f"| cases preprocessed (computed / cached) | {self.cases_preprocessed} ({self.preprocess_computed} / {self.preprocess_cached}) |",
                f"| quarantined (preprocess / pairing) | {q['preprocess'] + q['pairing']} ({q['preprocess']} / {q['pairing']}) |",
            ]
        else:
            lines = [
                title, *header,
                f"| objects found at source | {self.objects_found} |",
                f"| cases (images) found | {self.cases_found} |",
                f"| cases ingested | {self.cases_ingested} |",
                f"| cases passing validation | {self.cases_validated} |",
                f"| cases preprocessed (computed / cached) | {self.cases_preprocessed} ({self.preprocess_computed} / {self.preprocess_cached}) |",
                f"| skipped (image not in the store, or outside the selection) | {q['skipped']} |",
                f"| quarantined (ingest / validate / preprocess / pairing) | {len(self.quarantined) - q['skipped']} ({q['ingest']} / {q['validate']} / {q['preprocess']} / {q['pairing']}) |",
            ]
        bad = [r for r in self.quarantined if r.stage != "skipped"]
        if bad:
            lines += ["", "## Quarantined", "", "| stage | case | reason |", "|---|---|---|"]
            for r in bad[:200]:
                reason = r.reason.replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {r.stage} | {r.case_id or '—'} | {reason} |")
            if len(bad) > 200:
                lines.append(f"| … | … | {len(bad) - 200} more in quarantine/*.jsonl |")
        if self.outputs:
            lines += ["", "## Outputs", ""]
            for k, v in sorted(self.outputs.items()):
                url = link(v) if link else None
                lines.append(f"- [**{k}**]({url})" if url else f"- **{k}**: `{v}`")
        return "\n".join(lines) + "\n"
