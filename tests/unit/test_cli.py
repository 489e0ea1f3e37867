"""The command line: --help everywhere, --json prints exactly one JSON object."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mammoseg.cli import app

runner = CliRunner()
COMMANDS = ["synth", "ingest", "validate", "preprocess", "retrain", "predict", "evaluate", "demo", "serve"]


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


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "cbis-ddsm"], "--dataset cbis-ddsm has no root"),
        ([], "give --dataset NAME=SOURCE"),
        (["--dataset", "inbreast=/a", "--dataset", "cbis-ddsm", "--source", "/b"], "--source goes with one --dataset"),
        (["--dataset", "nope=/a"], "unknown dataset 'nope'"),
        (["--dataset", "inbreast=/a", "--dataset", "inbreast=/b"], "given more than once"),
        (["--source", "/a", "--heldout", "mini-mias=/b", "--heldout-source", "/c"], "not both"),
        (["--source", "/a", "--heldout-dataset", "inbreast"], "needs --heldout-source"),
        (["--source", "/a", "--heldout", "mini-mias=/b", "--primary", "inbreast"], "names no evaluated set"),
        (["--source", "/a", "--set", "colour=red"], "--set colour: not a RetrainParams field"),
        (["--source", "/a", "--set", "folds"], "expected KEY=VALUE"),
        (["--source", "/a", "--set", "folds=0"], "folds"),
        (["--source", "/a", "--set", "patch_size=512", "--size", "256"], "larger than the image size"),
        (["--source", "/a", "--size", "80"], "must be divisible by 2**depth = 32"),
    ],
)
def test_retrain_refuses_bad_dataset_options_before_any_run(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["retrain", *args])
    assert result.exit_code == 2 and message in _flat(result.output), result.output


def test_retrain_flags_left_out_take_the_retrain_params_defaults() -> None:
    from mammoseg.params import RetrainParams

    size = RetrainParams().size
    # a patch one pixel larger than the default image: refused with the default size in the message
    result = runner.invoke(app, ["retrain", "--source", "/a", "--set", f"patch_size={size + 1}"])
    assert result.exit_code == 2 and f"larger than the image size {size}" in _flat(result.output), result.output


def test_retrain_dataset_options_one_and_several() -> None:
    from mammoseg.cli import _dataset_sources
    from mammoseg.params import DatasetSource

    # the one-dataset form, as before: --source alone means cbis-ddsm
    assert _dataset_sources([], "/cbis", "cbis-ddsm", "--dataset", "--source") == [DatasetSource(dataset="cbis-ddsm", source_url="/cbis")]
    assert _dataset_sources(["inbreast"], "/inb", "cbis-ddsm", "--dataset", "--source")[0].dataset == "inbreast"
    several = _dataset_sources(["cdd-cesm-dm=s3://b/cdd?v=1", "inbreast=../shared/data/inbreast"], None, "cbis-ddsm", "--dataset", "--source")
    assert [(d.dataset, d.source_url) for d in several] == [("cdd-cesm-dm", "s3://b/cdd?v=1"), ("inbreast", "../shared/data/inbreast")]


def test_retrain_set_reads_json_values_into_retrain_params() -> None:
    from mammoseg.cli import _param_overrides
    from mammoseg.params import RetrainParams

    values = _param_overrides(["folds=5", "patch-size=256", "suppress_pectoral=true", "input_norm=breast",
                               "max_train_minutes=null"])
    assert values == {"folds": 5, "patch_size": 256, "suppress_pectoral": True, "input_norm": "breast",
                      "max_train_minutes": None}
    params = RetrainParams(size=512, **values)
    assert params.folds == 5 and params.patch_size == 256 and params.suppress_pectoral


def test_primary_set_defaults_and_names() -> None:
    from mammoseg.params import DatasetSource, resolve_primary

    train = [DatasetSource(dataset="cdd-cesm-dm", source_url="/a"), DatasetSource(dataset="inbreast", source_url="/b")]
    held = [DatasetSource(dataset="mini-mias-masses", source_url="/c"), DatasetSource(dataset="cbis-ddsm", source_url="/d")]
    assert resolve_primary(train, held, None) == "heldout-mini-mias-masses"
    assert resolve_primary(train, held, "cbis-ddsm") == "heldout-cbis-ddsm"
    assert resolve_primary(train, held, "internal-test-inbreast") == "internal-test-inbreast"
    assert resolve_primary(train, [], None) == "internal-test-cdd-cesm-dm"
    assert resolve_primary(train, held, "inbreast") == "internal-test-inbreast"  # a training set: its test split
    both = [DatasetSource(dataset="inbreast", source_url="/e")]
    assert resolve_primary(train, both, "inbreast") == "heldout-inbreast"  # held out as well: the held-out set
    with pytest.raises(ValueError, match="names no evaluated set"):
        resolve_primary(train, held, "mini-mias")  # not in this run
