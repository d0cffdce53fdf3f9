"""The overload stage inside tune, on plain data: its time plan, best.json's `overload` and
`capacity`, the summary lines, report.html's policy table and plot, and --apply."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from triton_ops.cli.tune import _print_best, overload_started_text
from triton_ops.envelope.loader import require_envelope
from triton_ops.envelope.model import Envelope
from triton_ops.loadgen.outcome import Outcome
from triton_ops.tune.apply import apply_to_envelope
from triton_ops.tune.batcher import Candidate, ServiceProfile, full_batch_us, predict_wait_share
from triton_ops.tune.events import OverloadStarted
from triton_ops.tune.overload import (
    OverloadPolicy,
    OverloadResult,
    PolicyResult,
    choose_policy,
    level_figures,
    policy_space,
)
from triton_ops.tune.overload.choice import MAX_NOMINAL_REJECTED, ChoiceRule
from triton_ops.tune.overload.config import protected_config, room_fits, room_share
from triton_ops.tune.overload.measure import CONFIRM_REQUESTS
from triton_ops.tune.overload.stage import (
    DRAIN_S,
    START_S,
    WINDOWS,
    OverloadStage,
    StageTiming,
    confirm_seconds,
    plan_stage,
)
from triton_ops.tune.report import chosen_policy, render_html, summary_lines
from triton_ops.tune.run import capacity_plan

SLO = 120_000.0
LEVELS = (0.8, 2.0, 3.0)
SPACE = policy_space(150.0, SLO, max_batch_size=32, max_queue_delay_us=0)


# -- the time plan ----------------------------------------------------------------------------

def test_the_reference_costs_more_than_a_policy_it_drains_its_backlog() -> None:
    timing = StageTiming(LEVELS, 1.0, 4.0, load_s=1.0)
    ref, policy = timing.policy_seconds(OverloadPolicy()), timing.policy_seconds(SPACE[1])
    assert policy == pytest.approx(1.0 + 0.6 + 3 * 5.6)
    assert ref == pytest.approx(policy + (1.0 + 2.0) * 5.0)


def test_the_longest_window_with_which_every_policy_fits() -> None:
    longest = StageTiming(LEVELS, *WINDOWS[0], load_s=1.0)
    needed = START_S + sum(longest.policy_seconds(p) for p in SPACE)
    plan = plan_stage(needed, SPACE, levels=LEVELS, load_s=1.0)
    assert plan.timing.window_s == WINDOWS[0][1] and plan.policies == tuple(SPACE)
    assert not plan.left_out and plan.skip_reason is None
    shorter = plan_stage(needed - 1, SPACE, levels=LEVELS, load_s=1.0)
    assert shorter.timing.window_s < WINDOWS[0][1] and shorter.policies == tuple(SPACE)
    assert shorter.estimate_s() <= needed - 1


def test_too_little_time_keeps_the_reference_and_what_fits_in_order() -> None:
    short = StageTiming(LEVELS, *WINDOWS[-1], load_s=1.0)
    three = START_S + sum(short.policy_seconds(p) for p in SPACE[:3])
    plan = plan_stage(three + 1, SPACE, levels=LEVELS, load_s=1.0)
    assert plan.policies == tuple(SPACE[:3]) and plan.left_out == tuple(SPACE[3:])
    assert plan.timing.window_s == WINDOWS[-1][1]
    # not even no policy and one policy: the stage does not run, and says what to do
    none = plan_stage(10.0, SPACE, levels=LEVELS, load_s=1.0)
    assert none.policies == () and none.skip_reason is not None
    assert "--budget" in none.skip_reason and "--no-overload" in none.skip_reason


def test_a_confirmation_costs_a_load_a_warm_up_its_window_and_two_drains() -> None:
    # 3000 requests at 0.8x 200 req/s: 18.75 s
    assert confirm_seconds(200.0, load_s=1.0) == pytest.approx(
        1.0 + WINDOWS[-1][0] + CONFIRM_REQUESTS / 160.0 + 2 * DRAIN_S)
    assert confirm_seconds(0.0, load_s=1.0) == pytest.approx(1.0 + WINDOWS[-1][0] + 2 * DRAIN_S)


def test_without_a_confirmed_goodput_the_stage_is_skipped_with_the_reason() -> None:
    events: list[object] = []
    stage = OverloadStage.run("127.0.0.1:1", None, {"slo_met": False, "goodput": None},  # type: ignore[arg-type]
                              SLO, seconds=60.0, share=0.3, load_s=1.0,
                              control=None, workers=1, on_event=events.append)  # type: ignore[arg-type]
    assert stage.result is None and "no config was confirmed" in (stage.not_run or "")
    assert type(events[0]).__name__ == "OverloadSkipped"
    best = stage.to_best()
    assert best["overload"] is None and best["overload_stage"]["not_run"] == stage.not_run


def test_the_started_event_says_the_share_and_what_is_left_for_later() -> None:
    text = overload_started_text(OverloadStarted(36.0, 0.3, tuple(SPACE[:2]),
                                                 tuple(SPACE[2:]), 2.0))
    assert "36 s (30% of the budget)" in text and "2 queue policies" in text
    assert "5 more if time allows" in text


# -- best.json, the summary, report.html ------------------------------------------------------

def level(lvl: float, within: int, rejected: int = 0, late: int = 0,
          seconds: float = 2.0) -> object:
    latency = [50_000.0] * within + [20_000.0] * rejected + [2e6] * late
    outcomes = ([Outcome.OK] * within + [Outcome.REJECTED_TIMEOUT] * rejected
                + [Outcome.CLIENT_TIMEOUT] * late)
    return level_figures(lvl, lvl * 150.0, seconds, latency, outcomes, SLO)


def overload_result() -> OverloadResult:
    reference = PolicyResult(OverloadPolicy(), (level(0.8, 240), level(2.0, 60, late=540),
                                                level(3.0, 10, late=890)))
    timeout = OverloadPolicy(timeout_us=42_000)
    shedding = PolicyResult(timeout, (level(0.8, 240), level(2.0, 280, rejected=320),
                                      level(3.0, 250, rejected=650)))
    left = PolicyResult(OverloadPolicy(max_queue_size=18), (), "not measured", "no time left")
    results = (reference, shedding, left)
    rule = ChoiceRule()
    choice = choose_policy(results, rule)
    return OverloadResult(150.0, SLO, Candidate(32, 0, 1).to_dict(), results, choice, rule)


def best_with_overload(target: float | None = 400.0) -> dict:
    result = overload_result()
    best = {"model": "accel_sim", "slo_p99_us": SLO, "goodput": 150.0, "slo_met": True,
            "confirmed": True, "chosen": Candidate(32, 0, 1).to_dict(), "kept_baseline": False,
            "remeasured": {"p99_us": 80_000.0, "p99_ci_low_us": 70_000.0,
                           "p99_ci_high_us": 90_000.0, "samples": 900},
            "measured_candidates": 3, "elapsed_s": 110.0, "budget_s": 120.0,
            "candidates": [], "out_dir": "/tmp/out",
            "overload": result.to_dict(),
            "overload_stage": {"budget_share": 0.3, "seconds": 36.0, "elapsed_s": 33.0,
                               "not_run": None, "warmup_s": 0.5, "window_s": 2.0}}
    env = Envelope.model_validate({
        "name": "accel_sim", "backend": "python", "inputs": [], "outputs": [],
        "slo": {"p99_latency": "120ms", **({"target_throughput": target} if target else {})}})
    best["capacity"] = capacity_plan(env, best)
    return json.loads(json.dumps(best))


def test_best_json_carries_the_policies_the_choice_and_the_capacity_plan() -> None:
    best = best_with_overload()
    overload = best["overload"]
    assert [p["status"] for p in overload["policies"]] == ["measured", "measured",
                                                           "not measured"]
    assert overload["chosen"]["helps"] and overload["chosen"]["policy"]["timeout_us"] == 42_000
    assert overload["holds_at_2x_rps"] == pytest.approx(140.0)
    plan = best["capacity"]
    # 400 / (150 x 0.8) = 3.33 -> 4, + 1 spare
    assert plan["needed"] == 4 and plan["replicas"] == 5
    assert plan["holds_at_2x_rps"] == pytest.approx(140.0)
    assert best_with_overload(target=None)["capacity"] is None


def test_summary_names_the_policy_the_gain_under_overload_and_the_replicas() -> None:
    lines = {line.label: line.text for line in summary_lines(best_with_overload())}
    assert lines["overload"].startswith("use timeout 42ms REJECT: offered at 2x 140 req/s "
                                        "within the SLO (no policy: 30)")
    assert "0.00% rejected at 0.8x" in lines["overload"]
    assert lines["capacity"].startswith("5 replicas for 400 req/s")
    assert "default_queue_policy {timeout_action: REJECT, default_timeout: 42ms}" in \
        lines["next"]
    buf = io.StringIO()
    _print_best(best_with_overload(), Console(file=buf, width=100, soft_wrap=True))
    printed = buf.getvalue()
    assert "1 of 3 policies not measured for lack of time" in printed
    assert "capacity: 5 replicas" in printed


def test_no_policy_helps_is_said_and_nothing_is_written() -> None:
    best = best_with_overload()
    best["overload"]["chosen"]["helps"] = False
    assert chosen_policy(best) is None
    lines = {line.label: line.text for line in summary_lines(best)}
    assert lines["overload"].startswith("no queue policy helps: keep none")
    assert "full batch" not in lines["overload"]  # no profile: nothing more to say


def test_when_a_full_batch_outlasts_the_slo_the_summary_says_so() -> None:
    best = best_with_overload()
    best["overload"]["chosen"]["helps"] = False
    best["profile"] = {"batch_us": {"16": 50_000.0, "32": 102_000.0, "64": 184_000.0}}
    best["overload"]["config"]["max_batch_size"] = 64
    text = {line.label: line.text for line in summary_lines(best)}["overload"]
    assert "A full batch of 64 takes 184 ms (the profile) over the SLO of 120 ms" in text
    # The stage's rule (room_fits at 0.8x the goodput of 150 req/s) holds for 16 only: its
    # full batch leaves 70 ms, which the queue wait outlasts rarely even with the stalls.
    assert "max_batch_size 16 leaves the room (the stage's rule" in text
    best["overload"]["config"]["max_batch_size"] = 32  # fits, with too little room
    text = {line.label: line.text for line in summary_lines(best)}["overload"]
    assert "A full batch of 32 takes 102 ms (the profile) and leaves 18 ms of the SLO" in text
    assert "rejects more than allowed at 0.8x the goodput" in text
    best["overload"]["config"]["max_batch_size"] = 16  # room: the reason lies elsewhere
    assert "full batch" not in {line.label: line.text
                                for line in summary_lines(best)}["overload"]


def test_report_html_has_the_policy_table_and_the_overload_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from triton_ops.tune.overload.report import overload_plot

    best = best_with_overload()
    title, fig = overload_plot(best, plt)
    lines = [line.get_label() for line in fig.axes[0].get_lines()]
    plt.close(fig)
    assert "no policy" in lines and "timeout 42ms REJECT" in lines
    assert "max_queue_size 18" not in lines  # not measured: no line
    page = render_html(best, [(title, "<svg>overload</svg>")])
    assert page.index("<h2>Candidates") < page.index("Past the knee") < page.index(
        "<svg>overload</svg>")
    assert "not measured: no time left" in page and '<tr class="chosen">' in page


# -- --apply ----------------------------------------------------------------------------------

ENVELOPE = """\
# served since March
name: m
backend: python
inputs: [{name: X, data_type: FP32, dims: [4]}]
outputs: [{name: Y, data_type: FP32, dims: [4]}]
batching:
  max_batch_size: 8  # first guess
  dynamic:
    max_queue_delay: 1ms
instances: [{kind: CPU, count: 1}]
slo:
  p99_latency: 120ms
"""


def test_apply_writes_the_policy_with_or_without_the_batching_settings(tmp_path: Path) -> None:
    envelope = tmp_path / "m.yaml"
    envelope.write_text(ENVELOPE)
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    policy = OverloadPolicy(timeout_us=42_000, max_queue_size=18)
    lines = apply_to_envelope(envelope, Candidate(32, 0, 1), repo, policy=policy)
    assert "and queue policy timeout 42ms REJECT + max_queue_size 18" in lines[0]
    env = require_envelope(envelope)
    assert env.max_batch_size == 32
    text = envelope.read_text()
    assert "# served since March" in text and "# first guess" in text
    config = (repo / "m" / "config.pbtxt").read_text()
    assert "default_timeout_microseconds: 42000" in config
    # REJECT is the proto's default timeout_action: the rendered config leaves it implicit
    assert "max_queue_size: 18" in config and "DELAY" not in config
    # the current config kept: only the policy is written
    envelope.write_text(ENVELOPE)
    apply_to_envelope(envelope, None, repo, policy=OverloadPolicy(timeout_us=60_000))
    env = require_envelope(envelope)
    assert env.max_batch_size == 8
    assert "default_timeout_microseconds: 60000" in (repo / "m" / "config.pbtxt").read_text()


# ---- which config the stage protects (plain data, the batcher model) ------------------------

ACCEL = ServiceProfile({b: 20_800.0 + 2_550.0 * b for b in (1, 2, 4, 8, 16, 32, 64)},
                       overhead_us=1_000.0, cpu_model=False, shared_cores=2)


def test_a_chosen_config_with_room_is_protected_itself() -> None:
    chosen = Candidate(16, 0, 1)
    assert room_fits(chosen, ACCEL, 150_000.0, 0.8 * 200.0)
    got = protected_config(chosen, 200.0, [(chosen, 205.0)], ACCEL, 150_000.0)
    assert got.candidate == chosen and got.reason is None
    assert got.full_batch_us == pytest.approx(20_800.0 + 2_550.0 * 16)


MEASURED = [(Candidate(64, 0, 1), 222.0), (Candidate(32, 0, 1), 208.0),
            (Candidate(16, 0, 1), 197.0), (Candidate(8, 0, 1), 190.0)]


def test_a_full_batch_over_the_slo_hands_the_stage_a_smaller_measured_batch() -> None:
    # SLO 150 ms: a full batch of 64 takes 184 ms, over it; 32 leaves 48 ms, less than the
    # nominal queue wait; 16 leaves 88 ms; 8 leaves 109 ms, with less goodput.
    got = protected_config(Candidate(64, 0, 1), 209.0, MEASURED, ACCEL, 150_000.0)
    assert got.candidate == Candidate(16, 0, 1) and got.goodput_rps == 197.0
    assert got.reason is not None and "full batch of 64 takes 184 ms" in got.reason
    assert got.reason.endswith("leaves it")
    assert room_fits(Candidate(16, 0, 1), ACCEL, 150_000.0, 0.8 * 197.0)
    assert not room_fits(Candidate(32, 0, 1), ACCEL, 150_000.0, 0.8 * 208.0)


def test_when_no_config_leaves_the_room_the_closest_is_measured_and_says_so() -> None:
    # SLO 120 ms: 16 leaves 58 ms, and with Triton's stalls under a queue policy the model
    # predicts a timeout of 58 ms rejects more than 0.1% at 0.8x; 8 fares worse (near its
    # capacity), 32 and 64 leave almost no room or none. 16 comes closest.
    shares = {c.max_batch_size: room_share(c, ACCEL, 120_000.0, 0.8 * g) for c, g in MEASURED}
    assert shares[64] is None and shares[16] > MAX_NOMINAL_REJECTED
    assert shares[16] == min(s for s in shares.values() if s is not None)
    got = protected_config(Candidate(64, 0, 1), 209.0, MEASURED, ACCEL, 120_000.0)
    assert got.candidate == Candidate(16, 0, 1) and got.goodput_rps == 197.0
    assert got.reason is not None and "comes closest: the model predicts" in got.reason
    # Without the stalls the same model finds room for 16: they decide it.
    room = 120_000.0 - full_batch_us(Candidate(16, 0, 1), ACCEL)
    assert predict_wait_share(Candidate(16, 0, 1), ACCEL, 0.8 * 197.0, room,
                              stall_share=0.0) <= MAX_NOMINAL_REJECTED


def test_no_config_is_traded_for_more_goodput_than_allowed_or_without_a_profile() -> None:
    chosen = Candidate(64, 0, 1)
    # 16 is 20% below the chosen config's search goodput: more than the stage gives up.
    far = protected_config(chosen, 209.0, [(chosen, 250.0), (Candidate(16, 0, 1), 200.0)],
                           ACCEL, 120_000.0)
    assert far.candidate == chosen and far.reason is None
    assert protected_config(chosen, 209.0, [(Candidate(16, 0, 1), 205.0)], None,
                            120_000.0).candidate == chosen


def test_a_policy_measured_on_another_config_goes_with_that_config(tmp_path: Path) -> None:
    from triton_ops.cli.tune import _apply

    best = best_with_overload()
    best["overload"]["config"] = Candidate(16, 0, 1).to_dict()
    best["overload"]["config_goodput_rps"] = 140.0
    best["overload"]["config_reason"] = "a full batch of 32 takes 130 ms"
    env = Envelope.model_validate({
        "name": "accel_sim", "backend": "python", "inputs": [], "outputs": [],
        "slo": {"p99_latency": "120ms", "target_throughput": 400}})
    best["capacity"] = json.loads(json.dumps(capacity_plan(env, best)))
    assert chosen_policy(best)["config"]["max_batch_size"] == 16
    lines = {line.label: line.text for line in summary_lines(best)}
    assert "use timeout 42ms REJECT on max_batch_size 16" in lines["overload"]
    assert "(measured there: a full batch of 32 takes 130 ms)" in lines["overload"]
    assert "batching.max_batch_size 16" in lines["next"]
    assert best["capacity"]["goodput_rps"] == 140.0  # replicas serve the config applied
    envelope = tmp_path / "m.yaml"
    envelope.write_text(ENVELOPE)
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    _apply(best, envelope, repo, Console(file=io.StringIO()))
    assert require_envelope(envelope).max_batch_size == 16
    assert "default_timeout_microseconds: 42000" in (repo / "m" / "config.pbtxt").read_text()
    # On the chosen config itself, nothing more than the policy is said.
    assert chosen_policy(best_with_overload())["config"] is None


def test_the_nominal_level_is_long_enough_to_resolve_its_rejection_limit() -> None:
    # 0.8 x 150 req/s: 1000 requests take 8.3 s, longer than any window.
    plan = plan_stage(1000.0, SPACE, levels=LEVELS, load_s=1.0, goodput_rps=150.0)
    assert plan.timing.window_s == WINDOWS[0][1]
    assert plan.timing.nominal_window_s == pytest.approx(1000 / 120.0)
    started = OverloadStarted(90.0, 0.3, plan.policies, (), plan.timing.window_s,
                              plan.timing.nominal_window_s)
    assert "4 s per load (8.3 s at 0.8x)" in overload_started_text(started)
    longer = plan.timing.policy_seconds(SPACE[1])
    assert longer - StageTiming(LEVELS, *WINDOWS[0], load_s=1.0).policy_seconds(SPACE[1]) == \
        pytest.approx(1000 / 120.0 - WINDOWS[0][1])

    # A share that fits no policy and one policy only with the nominal level's window
    # as long as the others' gets that.
    short = StageTiming(LEVELS, *WINDOWS[-1], load_s=1.0)
    seconds = START_S + sum(short.policy_seconds(p) for p in SPACE[:2]) + 1.0
    tight = plan_stage(seconds, SPACE, levels=LEVELS, load_s=1.0, goodput_rps=150.0)
    assert tight.skip_reason is None and tight.timing.nominal_window_s is None
    assert len(tight.policies) == 2
