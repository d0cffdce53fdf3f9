"""The capacity plan on plain data, and reading it from tune output folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from triton_ops.tune.capacity import (
    CapacityError,
    HeadroomRule,
    TunedModel,
    plan_capacity,
    plan_release,
    read_tune_result,
    tuned_from_best,
)

TUNED = TunedModel("clf", 180.0, "tune-results/clf/1", holds_at_2x_rps=150.0,
                   policy="timeout 88ms REJECT")


def test_replicas_follow_the_stated_rule() -> None:
    plan = plan_capacity(500.0, TUNED)
    # 500 / (180 x 0.8) = 3.47 -> 4 carry the target, + 1 spare
    assert (plan.needed, plan.replicas, plan.hpa_min) == (4, 5, 5)
    # a surge to twice the target: 1000 / 144 = 6.94 -> 7, + 1
    assert plan.hpa_max == 8
    assert plan.utilisation == pytest.approx(500 / 180 / 5)
    assert plan.utilisation_one_lost == pytest.approx(500 / 180 / 4)
    text = "\n".join(plan.lines())
    assert "5 replicas" in text and "HPA 5..8" in text and "180 req/s" in text
    assert "answers 150 req/s within the SLO with timeout 88ms REJECT" in text
    assert "ceil(target / (goodput x 0.8)) + 1 (N+1)" in text
    json.dumps(plan.to_dict(), allow_nan=False)


def test_exact_multiples_need_no_extra_replica() -> None:
    # 320 / (200 x 0.8) is 2 exactly (2.0000000000000004 in floating point)
    plan = plan_capacity(320.0, TunedModel("m", 200.0, "x"))
    assert (plan.needed, plan.replicas, plan.hpa_max) == (2, 3, 5)
    assert plan_capacity(1.0, TunedModel("m", 1000.0, "x")).replicas == 2  # at least one + 1


def test_other_rules() -> None:
    plan = plan_capacity(500.0, TUNED, HeadroomRule(utilisation_cap=1.0, spare=0, surge=3.0))
    assert (plan.needed, plan.replicas, plan.hpa_max) == (3, 3, 9)
    assert plan.utilisation_one_lost == pytest.approx(500 / 180 / 2)
    assert "N+" not in plan.rule.describe()
    for bad in ({"utilisation_cap": 0.0}, {"utilisation_cap": 1.5}, {"spare": -1},
                {"surge": 0.5}):
        with pytest.raises(ValueError):
            HeadroomRule(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        plan_capacity(0.0, TUNED)
    with pytest.raises(ValueError, match="no measured goodput"):
        plan_capacity(10.0, TunedModel("m", 0.0, "x"))


def test_a_release_adds_the_loads_of_its_models() -> None:
    one = plan_capacity(500.0, TUNED)  # 2.78 pods' worth
    two = plan_capacity(100.0, TunedModel("det", 400.0, "y"))  # 0.25
    release = plan_release([one, two])
    assert release.models == ("clf", "det") and release.target_rps == 600.0
    # (2.78 + 0.25) / 0.8 = 3.79 -> 4, + 1; the surge: 7.57 -> 8, + 1
    assert (release.needed, release.replicas, release.hpa_max) == (4, 5, 9)
    assert release.goodput_rps is None and "clf, det" in release.lines()[0]
    assert plan_release([one]) is one
    with pytest.raises(ValueError):
        plan_release([])


def test_best_json_gives_the_goodput_and_what_overload_left() -> None:
    best = {"model": "clf", "goodput": 180.0, "slo_met": True,
            "overload": {"holds_at_2x_rps": 150.0,
                         "chosen": {"policy": {"label": "timeout 88ms REJECT"}}}}
    assert tuned_from_best(best, "dir") == TunedModel("clf", 180.0, "dir", 150.0,
                                                      "timeout 88ms REJECT")
    plain = tuned_from_best({"model": "clf", "goodput": 90}, "dir")
    assert plain.holds_at_2x_rps is None and plain.policy is None
    nothing = {"model": "clf", "goodput": 0.0, "slo_met": False}
    with pytest.raises(CapacityError, match="dir/best.json: tune confirmed no goodput for clf"):
        tuned_from_best(nothing, "dir")
    with pytest.raises(CapacityError, match="confirmed no goodput"):
        tuned_from_best({"model": "clf", "goodput": 50.0, "slo_met": False}, "dir")
    with pytest.raises(CapacityError, match="no 'model'"):
        tuned_from_best({"goodput": 50.0}, "dir")
    with pytest.raises(CapacityError, match="'overload' is not what tune writes"):
        tuned_from_best({"model": "clf", "goodput": 50.0, "overload": [1]}, "dir")


def test_reading_tune_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CapacityError, match="no best.json here"):
        read_tune_result(run)
    (run / "best.json").write_text("{not json")
    with pytest.raises(CapacityError, match="cannot read it as JSON"):
        read_tune_result(run)
    (run / "best.json").write_text("[1, 2]")
    with pytest.raises(CapacityError, match="not a JSON object"):
        read_tune_result(run)
    (run / "best.json").write_text(json.dumps({"model": "clf", "goodput": 120.5}))
    assert read_tune_result(run) == TunedModel("clf", 120.5, str(run))
