"""Retrain: data pipeline per dataset → combined patient split → train → evaluate every set → publish.

Training sets are pooled (their manifests concatenated with a ``dataset`` column, each dataset
split by patient on its own); each is scored on its own internal test split
(``internal-test-<dataset>``, in-domain) and every held-out set as a whole
(``heldout-<dataset>``, cross-dataset). The ``primary`` set gates the champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.data_pipeline import DataRunResult, data_pipeline_flow
from flows.lineage import untracked
from mammoseg.params import (
    DatasetSource,
    RetrainParams,
    SetKind,
    check_datasets,
    eval_set_name,
    resolve_primary,
)
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import get_settings
from tasks.evaluate import EvalSpec, ScoredSet, evaluate_model
from tasks.publish import DatasetRun, PublishOutcome, create_artifacts, publish_model, summarize_run
from tasks.train import SplitOutcome, TrainOutcome, combine_manifests, split_by_patient, train_unet


class EvaluatedSetResult(BaseModel):
    """One evaluated set of the run, as the run's result reports it."""

    name: str  # internal-test-<dataset> | heldout-<dataset>
    kind: SetKind
    dataset: str
    metrics: dict[str, Any]
    metrics_uri: str
    overlays_uri: str | None


class RetrainResult(BaseModel):
    run_id: str
    model_uri: str
    plan_uri: str | None
    version: str
    promoted: bool
    gate_reason: str
    primary: str  # the set that gates the champion
    metrics: dict[str, Any]  # the primary set's ({} when it could not be evaluated)
    evaluations: list[EvaluatedSetResult]  # internal test sets first, then held-out sets
    data_reports: dict[str, str]  # data run id → its report URI
    split: dict[str, int]
    epochs_run: int


@flow(name="retrain", flow_run_name="retrain-{run_id}")
def retrain_flow(
    train: list[DatasetSource],
    heldout: list[DatasetSource],
    store_url: str,
    run_id: str,
    params: RetrainParams | None = None,
    primary: str | None = None,
) -> RetrainResult:
    p = params or RetrainParams()
    check_datasets(train, heldout)
    gate_set = resolve_primary(train, heldout, primary)
    prep = PreprocessParams.from_settings(get_settings(), size=p.size)
    trained_on = {d.dataset: untracked(data_pipeline_flow(d.dataset, d.source_url, store_url, f"{run_id}-{d.dataset}", prep))
                  for d in train}
    held_out = {d.dataset: untracked(data_pipeline_flow(d.dataset, d.source_url, store_url, f"{run_id}-heldout-{d.dataset}", prep))
                for d in heldout}
    manifest_uri = combine_manifests({name: _manifest(r) for name, r in trained_on.items()}, store_url, run_id)
    split = split_by_patient(manifest_uri, store_url, run_id, p)
    trained = train_unet(manifest_uri, split.split_uri, store_url, run_id, p)

    scored = _score_sets(train, heldout, trained_on, held_out, trained, split, manifest_uri, store_url, run_id, p)
    published = publish_model(
        store_url=store_url, run_id=run_id, trained=trained, split=split, train_manifest_uri=manifest_uri,
        heldout_manifest_uris={name: _manifest(r) for name, r in held_out.items()},
        scored=scored, primary=gate_set, promote_metric=p.promote_metric,
        sources={d.dataset: d.source_url for d in [*train, *heldout]},
    )
    # the run's own artifacts, made by the flow itself: the UI lists them under this flow run
    create_artifacts(summarize_run(
        run_id=run_id, scored=scored, published=published, primary=gate_set,
        datasets=_dataset_runs(trained_on, held_out),
    ))
    return _result(run_id, gate_set, trained, split, scored, published, [*trained_on.values(), *held_out.values()])


def _score_sets(
    train: list[DatasetSource], heldout: list[DatasetSource], trained_on: dict[str, DataRunResult],
    held_out: dict[str, DataRunResult], trained: TrainOutcome, split: SplitOutcome, manifest_uri: str,
    store_url: str, run_id: str, p: RetrainParams,
) -> list[ScoredSet]:
    """``evaluate-model`` on each training dataset's internal test split (one with no test
    patients is skipped, with a warning), then on each held-out dataset as a whole."""
    scored: list[ScoredSet] = []
    for d in train:
        test_ids = split_ids(split.split_uri, "test", d.dataset)
        if not test_ids:
            get_run_logger().warning("%s has no test patients: no internal test figures for it", d.dataset)
            continue
        data = trained_on[d.dataset]
        outcome = evaluate_model(EvalSpec(
            name=eval_set_name("internal_test", d.dataset), model_uri=trained.model_uri, manifest_uri=_manifest(data),
            lesions_uri=data.lesions_uri, source_url=d.source_url, store_url=store_url, run_id=run_id, n_boot=p.n_boot,
            train_manifest_uri=manifest_uri, split_uri=split.split_uri, case_ids=test_ids,
        ))
        scored.append(ScoredSet(kind="internal_test", dataset=d.dataset, outcome=outcome))
    for d in heldout:
        data = held_out[d.dataset]
        outcome = evaluate_model(EvalSpec(
            name=eval_set_name("heldout", d.dataset), model_uri=trained.model_uri, manifest_uri=_manifest(data),
            lesions_uri=data.lesions_uri, source_url=d.source_url, store_url=store_url, run_id=run_id, n_boot=p.n_boot,
            train_manifest_uri=manifest_uri, split_uri=split.split_uri,
        ))
        scored.append(ScoredSet(kind="heldout", dataset=d.dataset, outcome=outcome))
    return scored


def _dataset_runs(trained_on: dict[str, DataRunResult], held_out: dict[str, DataRunResult]) -> list[DatasetRun]:
    return [
        DatasetRun(role=role, dataset=name, report_uri=r.report_uri, contact_sheet_uri=r.contact_sheet_uri,
                   data_docs_uri=r.data_docs_uri)
        for role, runs in (("train", trained_on), ("heldout", held_out)) for name, r in runs.items()
    ]


def _result(
    run_id: str, gate_set: str, trained: TrainOutcome, split: SplitOutcome, scored: list[ScoredSet],
    published: PublishOutcome, data_runs: list[DataRunResult],
) -> RetrainResult:
    by_name = {s.name: s.outcome for s in scored}
    return RetrainResult(
        run_id=run_id,
        model_uri=published.model_uri,
        plan_uri=published.plan_uri,
        version=published.version,
        promoted=published.promoted,
        gate_reason=published.gate_reason,
        primary=gate_set,
        metrics=by_name[gate_set].metrics if gate_set in by_name else {},
        evaluations=[
            EvaluatedSetResult(name=s.name, kind=s.kind, dataset=s.dataset, metrics=s.outcome.metrics,
                               metrics_uri=s.outcome.metrics_uri, overlays_uri=s.outcome.overlays_uri)
            for s in scored
        ],
        data_reports={r.run_id: r.report_uri for r in data_runs},
        split=split.counts,
        epochs_run=trained.epochs_run,
    )


def _manifest(data: DataRunResult) -> str:
    if not data.manifest_uri:
        raise RuntimeError(f"{data.dataset}: no case was preprocessed. Report: {data.report_uri}")
    return data.manifest_uri


def split_ids(split_uri: str, which: str, dataset: str | None = None) -> list[str]:
    """Case ids of split ``which`` (of one ``dataset`` of a combined split, when given)."""
    from mammoseg.catalog import read_split

    table = read_split(split_uri)
    rows = table["split"] == which
    if dataset is not None:
        rows &= table["dataset"] == dataset
    return table.loc[rows, "case_id"].tolist()
