"""The command line: --help everywhere, --json prints exactly one JSON object."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mammoseg.cli import app

runner = CliRunner()
COMMANDS = ["synth", "ingest", "validate", "preprocess", "retrain", "predict", "demo", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "--help" in result.output


def test_top_level_help_lists_the_pipeline() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_synth_json_is_one_object(tmp_path) -> None:
    result = runner.invoke(
        app, ["synth", "--out", str(tmp_path), "--patients", "2", "--height", "96", "--width", "64",
              "--mias-images", "2", "--mias-size", "64", "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["cbis_images"] >= 2 and payload["mias_images"] == 2
    assert (tmp_path / "raw" / "synthetic-cbis-ddsm" / "csv" / "mass_case_description_train_set.csv").exists()


@pytest.mark.realdata
def test_validate_real_cbis_csvs_reports_failures_readably(shared_data, tmp_path) -> None:
    args = ["validate", "--dataset", "cbis-ddsm", "--source", str(shared_data / "cbis-ddsm" / "csv"), "--docs", str(tmp_path)]
    text = runner.invoke(app, args)
    assert text.exit_code == 1  # the real CSVs hold density 0 and subtlety 0
    assert "✗" in text.stdout and "density" in text.stdout and "subtlety" in text.stdout

    result = runner.invoke(app, [*args, "--json"])
    payload = json.loads(result.stdout)
    assert payload["success"] is False
    by_name = {r["name"]: r for r in payload["results"]}
    failing = [r for r in payload["results"] if not r["success"]]
    assert {tuple(r["columns"]) for r in failing} == {("density",), ("subtlety",)}
    for r in payload["results"]:
        assert {"name", "success", "unexpected_count", "unexpected_examples"} <= set(r)
    assert sum(r["unexpected_count"] for r in failing) == 4
    assert all(0 in r["unexpected_examples"] for r in failing)
    assert (tmp_path / "index.html").exists()
    assert len(by_name) >= 10
