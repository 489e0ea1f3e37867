"""The per-model time budget of the training recipe: wall clock or process CPU time."""

from __future__ import annotations

import time

import pytest

from mammoseg.training import recipe


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_budget_stops_when_another_epoch_would_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setitem(recipe.CLOCKS, "cpu", clock)
    hook = recipe.Budget(1.0, "cpu").hook(None)  # 60 s
    clock.t += 25
    assert hook(1, {}) is False  # 25 s done, 50 s after one more epoch of 25 s
    clock.t += 20
    assert hook(2, {}) is True  # 45 s done, 67.5 s after one more epoch of 22.5 s


def test_budget_reads_the_named_clock_only(monkeypatch: pytest.MonkeyPatch) -> None:
    wall, cpu = FakeClock(), FakeClock()
    monkeypatch.setitem(recipe.CLOCKS, "wall", wall)
    monkeypatch.setitem(recipe.CLOCKS, "cpu", cpu)
    hook = recipe.Budget(1.0, "cpu").hook(None)
    wall.t += 3600  # a busy machine: wall time passes while this process waits
    assert hook(1, {}) is False
    cpu.t += 50
    assert hook(2, {}) is True


def test_clocks_are_monotonic_time_and_process_cpu_time() -> None:
    assert recipe.CLOCKS == {"wall": time.monotonic, "cpu": time.process_time}


def test_budget_calls_the_inner_hook_and_none_means_no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setitem(recipe.CLOCKS, "wall", clock)
    seen: list[tuple[int, dict]] = []
    budget = recipe.Budget(None)
    hook = budget.hook(lambda e, logs: seen.append((e, logs)))
    clock.t += 1e6
    assert hook(1, {"val_dice": 0.5}) is False
    assert seen == [(1, {"val_dice": 0.5})]
    assert budget.spent() == 0.0 and budget.progress(40)(10) == 0.25


def test_progress_is_the_budget_spent_or_the_epochs_done_whichever_is_further(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setitem(recipe.CLOCKS, "cpu", clock)
    budget = recipe.Budget(2.0, "cpu")  # 120 s
    progress = budget.progress(200)
    assert progress(0) == 0.0
    clock.t += 30
    assert progress(3) == 0.25  # 30 of 120 s spent; 3 of 200 epochs is less
    assert budget.progress(10)(5) == 0.5  # half the epochs done is further along


def test_params_reject_an_unknown_clock() -> None:
    from pydantic import ValidationError

    from mammoseg.params import RetrainParams

    assert RetrainParams().budget_clock == "wall"
    with pytest.raises(ValidationError):
        RetrainParams(budget_clock="gpu")


def test_patch_shares_default_to_the_patch_sampler_defaults_and_must_fit() -> None:
    from pydantic import ValidationError

    from mammoseg.params import RetrainParams
    from mammoseg.training.patches import PatchConfig

    p = RetrainParams()
    assert (p.patch_lesion_share, p.patch_hard_negative_share) == (PatchConfig.lesion_share,
                                                                   PatchConfig.hard_negative_share)
    with pytest.raises(ValidationError, match="<= 1"):
        RetrainParams(patch_lesion_share=0.7, patch_hard_negative_share=0.4)


def test_params_refuse_deep_supervision_at_the_depth_and_an_unknown_schedule() -> None:
    from pydantic import ValidationError

    from mammoseg.params import RetrainParams

    assert (RetrainParams().deep_supervision, RetrainParams().lr_schedule) == (0, "plateau")
    assert RetrainParams(depth=3, deep_supervision=2).deep_supervision == 2
    with pytest.raises(ValidationError, match="below depth"):
        RetrainParams(depth=2, deep_supervision=2)
    with pytest.raises(ValidationError):
        RetrainParams(lr_schedule="cosine")


def test_params_norm_reaches_the_network_and_contradictions_are_refused() -> None:
    from pydantic import ValidationError

    from mammoseg.params import RetrainParams
    from mammoseg.training.recipe import configs

    assert RetrainParams().norm == "instance"
    for norm in ("batch", "group", "instance", "none"):
        model_config, _ = configs(RetrainParams(norm=norm, depth=2), 64)
        assert model_config.normalization == norm
    # parameters written before `norm` existed: batch_norm=False meant no normalisation
    assert RetrainParams.model_validate({"batch_norm": False}).norm == "none"
    assert RetrainParams(batch_norm=False, norm="batch").norm == "none"
    legacy_params = RetrainParams(batch_norm=False)
    assert RetrainParams.model_validate(legacy_params.model_dump()).norm == "none"  # survives a reload
    legacy, _ = configs(RetrainParams(batch_norm=False, depth=2), 64)
    assert legacy.normalization == "none"
    with pytest.raises(ValidationError, match="contradicts norm='instance'"):
        RetrainParams(batch_norm=False, norm="instance")


def test_params_post_processing_modes_reach_the_training() -> None:
    from pydantic import ValidationError

    from mammoseg.evaluation import DEFAULT_KEEP_CANDIDATES, DEFAULT_MIN_SCORE_CANDIDATES
    from mammoseg.params import RetrainParams
    from mammoseg.training.recipe import postprocess_candidates

    assert RetrainParams().postprocess == "choose"
    assert postprocess_candidates("choose") == (DEFAULT_KEEP_CANDIDATES, DEFAULT_MIN_SCORE_CANDIDATES)
    assert postprocess_candidates("top_components") == (DEFAULT_KEEP_CANDIDATES, (None,))
    assert postprocess_candidates("none") == ((None,), (None,))
    with pytest.raises(ValidationError):
        RetrainParams(postprocess="largest")
