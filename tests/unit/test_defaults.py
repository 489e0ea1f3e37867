"""One home per default: the CLI and the flows read the parameters' defaults, never their own."""

from __future__ import annotations

import pytest
import typer

from mammoseg.cli import app
from mammoseg.params import RetrainParams
from mammoseg.preprocess.params import PreprocessParams
from mammoseg.settings import Settings


def _options(command: str) -> dict[str, object]:
    click_app = typer.main.get_command(app)
    return {p.name: p.default for p in click_app.commands[command].params}


def test_preprocessing_defaults_live_in_settings() -> None:
    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    p = PreprocessParams()
    assert (p.size, p.clahe_clip_limit, p.clahe_tile_grid, p.canonical_side) == (
        defaults["image_size"], defaults["clahe_clip_limit"], defaults["clahe_tile_grid"], defaults["canonical_side"])
    assert p.size == 512  # the value itself, by hand


def test_demo_takes_the_model_size_from_retrain_params() -> None:
    from flows.demo import DEMO_OVERRIDES, demo_params

    assert demo_params().size == RetrainParams().size == 128
    assert demo_params().epochs == DEMO_OVERRIDES["epochs"]
    assert demo_params(size=64, epochs=2).size == 64 and demo_params(size=64, epochs=2).epochs == 2


@pytest.mark.parametrize(("command", "names"), [
    ("demo", ["size", "epochs"]),
    ("retrain", ["size", "epochs", "batch_size", "seed"]),
    ("preprocess", ["size"]),
    ("synth", ["patients", "height", "width", "mias_images", "mias_size"]),
])
def test_cli_options_leave_the_default_to_the_library(command: str, names: list[str]) -> None:
    options = _options(command)
    assert {n: options[n] for n in names} == dict.fromkeys(names)
