"""Work pools: the pooled deployments round-trip through Prefect's deployment API, prefect.yaml
says the same, and without pools `mammoseg serve`'s deployments name none."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.deployments import (
    POOLED,
    WorkPoolsUnset,
    apply_pool_deployments,
    build_deployments,
    pool_names,
)
from mammoseg.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_pooled_deployments_round_trip_through_the_api() -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    settings = Settings(cpu_work_pool="mammoseg-cpu-test", gpu_work_pool="mammoseg-gpu-test")
    with get_client(sync_client=True) as client:
        for name in ("mammoseg-cpu-test", "mammoseg-gpu-test"):
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass
        names = apply_pool_deployments(settings)
        assert sorted(names) == sorted([
            "data-pipeline/data-pipeline", "evaluate/evaluate", "retrain/retrain",
            "new-data/retrain-weekly", "new-data/new-data",
        ])
        got = {n: client.read_deployment_by_name(n) for n in names}
    expected_pool = {
        "data-pipeline/data-pipeline": "mammoseg-cpu-test",
        "evaluate/evaluate": "mammoseg-cpu-test",
        "retrain/retrain": "mammoseg-gpu-test",
        "new-data/retrain-weekly": "mammoseg-gpu-test",
        "new-data/new-data": "mammoseg-gpu-test",
    }
    for name, deployment in got.items():
        assert deployment.work_pool_name == expected_pool[name], name
        kind = "cpu" if expected_pool[name].startswith("mammoseg-cpu") else "gpu"
        assert f"pool:{kind}" in deployment.tags
    assert got["data-pipeline/data-pipeline"].entrypoint == "flows.data_pipeline.data_pipeline_flow"
    assert got["retrain/retrain"].entrypoint == "flows.retrain.retrain_flow"
    # the served deployments keep their schedule, queueing and parameters in the pool
    weekly = got["new-data/retrain-weekly"]
    assert weekly.parameters == {"trigger": "schedule"}
    assert [s.schedule.cron for s in weekly.schedules] == [settings.retrain_cron]
    assert weekly.global_concurrency_limit is not None and weekly.global_concurrency_limit.limit == 1
    assert got["new-data/new-data"].global_concurrency_limit.limit == 1


def test_prefect_yaml_puts_each_deployment_in_the_same_pool() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    for name, (entrypoint, kind) in POOLED.items():
        module, _, attr = entrypoint.partition(":")
        assert by_name[name]["entrypoint"] == module.replace(".", "/") + ".py:" + attr
        assert by_name[name]["work_pool"]["name"] == "{{ $MAMMOSEG_" + kind.upper() + "_WORK_POOL }}"
    assert by_name["retrain-weekly"]["work_pool"]["name"] == "{{ $MAMMOSEG_GPU_WORK_POOL }}"


def test_serve_needs_no_pool_and_pooled_deployments_need_both() -> None:
    assert all(d.work_pool_name is None for d in build_deployments(Settings()))
    with pytest.raises(WorkPoolsUnset, match="MAMMOSEG_CPU_WORK_POOL and MAMMOSEG_GPU_WORK_POOL not set"):
        pool_names(Settings())
    with pytest.raises(WorkPoolsUnset, match="^MAMMOSEG_GPU_WORK_POOL not set"):
        pool_names(Settings(cpu_work_pool="cpu"))


def test_deploy_without_pools_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mammoseg.cli import app

    monkeypatch.delenv("MAMMOSEG_CPU_WORK_POOL", raising=False)
    monkeypatch.delenv("MAMMOSEG_GPU_WORK_POOL", raising=False)
    result = CliRunner().invoke(app, ["deploy", "--cpu-pool", "cpu-only"])
    assert result.exit_code == 2
    assert "MAMMOSEG_GPU_WORK_POOL not set" in result.output
