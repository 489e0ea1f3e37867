"""What a retrain run shows about itself: the ``retrain-summary`` Markdown (the published
version, every evaluated set, every dataset, with links a browser opens), each dataset's run
report and contact sheet, as artifact specifications the flow creates (no Prefect here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from mammoseg.runreport import RunReport
from mammoseg.settings import Settings


class DatasetRun(BaseModel):
    """One data-pipeline run of a retrain, for the retrain's own summary artifacts."""

    role: Literal["train", "heldout"]
    dataset: str
    report_uri: str
    contact_sheet_uri: str | None = None
    data_docs_uri: str | None = None


class ArtifactSpec(BaseModel):
    """One artifact the flow itself creates (so the UI lists it under the flow run)."""

    kind: Literal["markdown", "image"]
    key: str
    body: str  # Markdown, or the image's URL
    description: str


@dataclass(frozen=True)
class ScoredLine:
    """One evaluated set as the summary lists it."""

    name: str
    metrics: Mapping[str, Any]
    overlays_uri: str | None


@dataclass(frozen=True)
class PublishedLine:
    """The published version as the summary names it."""

    version: str
    promoted: bool
    gate_reason: str
    model_card_uri: str
    model_uri: str
    metrics_uri: str


def retrain_artifacts(
    *, run_id: str, datasets: Sequence[tuple[DatasetRun, RunReport]], scored: Sequence[ScoredLine],
    published: PublishedLine, primary: str, settings: Settings,
) -> list[ArtifactSpec]:
    """``retrain-summary``, then per dataset ``retrain-report-<role>-<dataset>`` and (when a
    browser can open it) ``contact-sheet-<role>-<dataset>``."""
    from mammoseg.links import artifact_key, browser_url, md_link
    from mammoseg.publish import _ci, _fmt

    def link(text: str, uri: str | None) -> str:
        url = browser_url(uri, settings)
        return f"[{text}]({url})" if url else (f"`{uri}`" if uri else "—")

    verdict = "promoted to champion" if published.promoted else "not promoted"
    lines = [
        f"# Retrain `{run_id}`",
        "",
        f"**Model version `{published.version}`**: {verdict} ({published.gate_reason}).",
        "",
        f"- {md_link('Model card', published.model_card_uri, settings)}",
        f"- {md_link('Model file (.keras)', published.model_uri, settings)}",
        f"- {md_link('Metrics (JSON)', published.metrics_uri, settings)}",
        "",
        "## Evaluated sets",
        "",
        "| set | images (patients) | Dice, mean per image [95% CI] | Dice, pooled | overlays |",
        "|---|---:|---|---:|---|",
    ]
    for s in scored:
        m = s.metrics
        mark = " (primary)" if s.name == primary else ""
        lines.append(
            f"| {s.name}{mark} | {_fmt(m.get('n_cases'))} ({_fmt(m.get('n_patients'))}) | "
            f"{_fmt(m.get('dice_mean'))} [{_ci(m, 'dice_mean')}] | {_fmt(m.get('dice_pooled'))} | "
            f"{link('image', s.overlays_uri)} |"
        )
    lines += [
        "",
        ("*internal-test-*: the training dataset's own test patients (in-domain); *heldout-*: a dataset "
         "never trained on (cross-dataset)."),
        "",
        "## Data",
        "",
        "| dataset | role | cases found | preprocessed | quarantined | run report | Data Docs | contact sheet |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    specs: list[ArtifactSpec] = []
    for d, report in datasets:
        bad = sum(1 for r in report.quarantined if r.stage != "skipped")
        role = "training" if d.role == "train" else "held-out"
        lines.append(
            f"| {d.dataset} | {role} | {report.cases_found} | {report.cases_preprocessed} | {bad} | "
            f"{link('JSON', d.report_uri)} | {link('open', d.data_docs_uri)} | {link('image', d.contact_sheet_uri)} |"
        )
        slug = artifact_key(f"{d.role}-{d.dataset}")
        specs.append(ArtifactSpec(kind="markdown", key=f"retrain-report-{slug}",
                                  body=report.markdown(link=lambda u: browser_url(u, settings)),
                                  description=f"run report of {d.dataset} ({role}), retrain {run_id}"))
        sheet = browser_url(d.contact_sheet_uri, settings)
        if sheet:
            specs.append(ArtifactSpec(kind="image", key=f"contact-sheet-{slug}", body=sheet,
                                      description=f"preprocessed images of {d.dataset} with their masks, retrain {run_id}"))
    summary = ArtifactSpec(kind="markdown", key="retrain-summary", body="\n".join(lines) + "\n",
                           description=f"retrain {run_id}: what it produced")
    return [summary, *specs]
