"""The overload stage on plain data: the policy space, the figures, the choice, best.json."""

from __future__ import annotations

import json
import math

import pytest

from triton_ops.loadgen.outcome import Outcome, classify_error
from triton_ops.tune.batcher import Candidate
from triton_ops.tune.overload import (
    ChoiceRule,
    LevelFigures,
    OverloadPolicy,
    OverloadResult,
    PolicyResult,
    choose_policy,
    level_figures,
    policy_space,
    room_us,
)
from triton_ops.tune.overload.choice import qualifies, slow_rejections
from triton_ops.tune.overload.measure import overload_config

SLO = 250_000.0
OK, FULL, TIMEOUT, LATE, ERROR = (Outcome.OK, Outcome.REJECTED_QUEUE_FULL,
                                  Outcome.REJECTED_TIMEOUT, Outcome.CLIENT_TIMEOUT,
                                  Outcome.ERROR)


# -- the space --------------------------------------------------------------------------------

def test_space_starts_with_no_policy_and_derives_timeouts_and_queue_from_goodput() -> None:
    space = policy_space(200.0, SLO, max_batch_size=16)
    assert space[0] == OverloadPolicy() and space[0].is_reference
    timeouts = [p.timeout_us for p in space if p.timeout_us and not p.max_queue_size]
    assert timeouts == [50_000, 88_000, 125_000]  # 0.2, 0.35, 0.5 of the SLO, whole ms
    # 200 req/s x 0.25 s: a queue of 50 drains within the SLO
    assert OverloadPolicy(max_queue_size=50) in space
    assert OverloadPolicy(timeout_us=88_000, max_queue_size=50) in space
    assert OverloadPolicy(timeout_us=125_000, max_queue_size=50) in space
    assert len(space) == len(set(space)) == 7
    assert all(p.config_json() is None or p.config_json()["timeout_action"] == "REJECT"
               for p in space)


def test_timeouts_lie_around_the_room_a_full_batch_leaves() -> None:
    # SLO 120 ms, a full batch of 16 executes in 60 ms: 60 ms of room; the timeouts lie from
    # 0.9 to 1.2 times it, shortest first, and the combined ones take the two longest.
    space = policy_space(200.0, 120_000.0, max_batch_size=16, full_batch_us=60_000.0)
    timeouts = [p.timeout_us for p in space if p.timeout_us and not p.max_queue_size]
    assert timeouts == [54_000, 60_000, 66_000, 72_000]
    assert [p.timeout_us for p in space if p.timeout_us and p.max_queue_size] == [66_000, 72_000]
    # A full batch that outlasts the SLO leaves no room: the SLO's fractions, as without E.
    assert policy_space(200.0, SLO, max_batch_size=64, full_batch_us=300_000.0) == \
        policy_space(200.0, SLO, max_batch_size=64)
    assert room_us(120_000.0, 60_000.0) == 60_000.0 and room_us(120_000.0, None) is None


def test_space_respects_the_batcher() -> None:
    # A timeout at or under max_queue_delay would reject lone requests at any load: dropped.
    space = policy_space(200.0, SLO, max_batch_size=16, max_queue_delay_us=88_000)
    assert {p.timeout_us for p in space} == {0, 125_000}
    # G x SLO below max_batch_size: the queue is held at max_batch_size (a smaller queue
    # caps every batch).
    small = policy_space(20.0, SLO, max_batch_size=16)
    assert {p.max_queue_size for p in small} == {0, 16}
    with pytest.raises(ValueError, match="goodput"):
        policy_space(0.0, SLO, max_batch_size=16)


def test_policy_forms() -> None:
    p = OverloadPolicy(timeout_us=88_000, max_queue_size=50)
    assert p.key == "timeout88ms+queue50" and p.settings == 2
    assert p.label() == "timeout 88ms REJECT + max_queue_size 50"
    assert p.config_json() == {"timeout_action": "REJECT",
                               "default_timeout_microseconds": "88000", "max_queue_size": 50}
    assert p.envelope_dict() == {"timeout_action": "REJECT", "default_timeout": "88ms",
                                 "max_queue_size": 50}
    assert OverloadPolicy.from_dict(p.to_dict()) == p
    assert OverloadPolicy().label() == "no policy" and OverloadPolicy().envelope_dict() is None
    with pytest.raises(ValueError):
        OverloadPolicy(timeout_us=-1)


def test_overload_config_sets_only_the_batching_settings_and_the_policy() -> None:
    base = {"name": "m", "max_batch_size": 8, "parameters": {"k": {"string_value": "v"}},
            "dynamic_batching": {"max_queue_delay_microseconds": "100",
                                 "default_queue_policy": {"max_queue_size": 3}},
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}]}
    cand = Candidate(16, 500, 2)
    cfg = overload_config(base, cand, OverloadPolicy(timeout_us=50_000))
    assert cfg["max_batch_size"] == 16 and cfg["instance_group"][0]["count"] == 2
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == "500"
    assert cfg["dynamic_batching"]["default_queue_policy"] == {
        "timeout_action": "REJECT", "default_timeout_microseconds": "50000"}
    assert cfg["parameters"] == base["parameters"]
    # the reference removes whatever policy the model had
    assert "default_queue_policy" not in overload_config(base, cand, OverloadPolicy())[
        "dynamic_batching"]
    # a model that does not batch keeps a batcher for the policy alone
    flat = overload_config(base, Candidate(0, 0, 1), OverloadPolicy(max_queue_size=4))
    assert flat["dynamic_batching"] == {"default_queue_policy": {"timeout_action": "REJECT",
                                                                 "max_queue_size": 4}}
    assert "dynamic_batching" not in overload_config(base, Candidate(0, 0, 1), OverloadPolicy())
    assert base["dynamic_batching"]["default_queue_policy"] == {"max_queue_size": 3}


# -- the figures ------------------------------------------------------------------------------

def test_outcomes_are_classified_from_triton_errors() -> None:
    assert classify_error("StatusCode.UNAVAILABLE",
                          "[request id: <id_unknown>] Exceeds maximum queue size") is FULL
    assert classify_error("StatusCode.UNAVAILABLE", "Request timeout expired") is TIMEOUT
    assert classify_error("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded") is LATE
    assert classify_error("UNAVAILABLE", "Request timeout expired") is TIMEOUT
    # the same words under another status, or another UNAVAILABLE, are failures
    assert classify_error("StatusCode.INTERNAL", "Request timeout expired") is ERROR
    assert classify_error("StatusCode.UNAVAILABLE", "failed to connect") is ERROR
    assert classify_error(None, None) is ERROR
    assert FULL.rejected and TIMEOUT.rejected and not LATE.rejected and not OK.rejected


def test_level_figures_count_only_timely_answers() -> None:
    latency = [10_000, 240_000, 260_000, 5_000, 120_000, 900_000, 1_000_000, 30_000]
    outcomes = [OK, OK, OK, FULL, TIMEOUT, LATE, LATE, ERROR]
    f = level_figures(2.0, 400.0, 2.0, latency, outcomes, SLO,
                      lateness_us=[0, 0, 5000, 0, 0, 0, 0, 0])
    assert (f.requests, f.answered, f.within_slo) == (8, 3, 2)
    assert (f.rejected_queue_full, f.rejected_timeout, f.client_timeouts, f.errors) == \
        (1, 1, 2, 1)
    assert f.within_slo_rps == 1.0 and f.offered_rps == 4.0
    assert f.rejected == 2 and f.rejected_share == 0.25
    assert f.p99_answered.value == 260_000 and f.p99_answered.n == 3
    assert f.p99_rejected.value == 120_000 and f.p99_rejected.n == 2
    assert f.rejections_within(SLO) is True and f.late_fraction == 1 / 8
    none = level_figures(0.8, 160.0, 1.0, [1000.0], [OK], SLO)
    assert none.rejections_within(SLO) is None and math.isnan(none.p99_rejected.value)
    with pytest.raises(ValueError):
        level_figures(1.0, 1.0, 1.0, [1.0], [], SLO)


# -- the choice -------------------------------------------------------------------------------

def figures(level: float, within: int, *, requests: int = 1000, rejected: int = 0,
            seconds: float = 4.0) -> LevelFigures:
    """A level where `within` requests came back within the SLO and `rejected` were shed."""
    late = requests - within - rejected
    latency = [50_000.0] * within + [100_000.0] * rejected + [2e6] * late
    outcomes = [OK] * within + [TIMEOUT] * rejected + [LATE] * late
    return level_figures(level, 0.0, seconds, latency, outcomes, SLO)


def result(policy: OverloadPolicy, nominal_shed: int, at2: int, at3: int) -> PolicyResult:
    return PolicyResult(policy, (figures(0.8, 640 - nominal_shed, requests=640,
                                         rejected=nominal_shed),
                                 figures(2.0, at2, requests=1600, rejected=1600 - at2),
                                 figures(3.0, at3, requests=2400, rejected=2400 - at3)))


NONE = OverloadPolicy()
T50, T88, T125 = (OverloadPolicy(timeout_us=t) for t in (50_000, 88_000, 125_000))
Q50 = OverloadPolicy(max_queue_size=50)
T88Q50 = OverloadPolicy(timeout_us=88_000, max_queue_size=50)


def test_choice_takes_the_most_timely_answers_among_policies_that_shed_little_at_nominal() -> None:
    results = [
        PolicyResult(NONE, (figures(0.8, 640, requests=640), figures(2.0, 0, requests=1600),
                            figures(3.0, 0, requests=2400))),
        result(T50, 150, 880, 900),  # the most under overload, but sheds 23% at 0.8x
        result(T88, 1, 860, 870),  # 0.16% at 0.8x: over the 0.1% allowed
        result(T125, 0, 820, 600),
        result(Q50, 0, 800, 800),
    ]
    choice = choose_policy(results)
    assert choice.policy == Q50 and choice.helps
    assert choice.within_slo_rps == {2.0: 200.0, 3.0: 200.0}
    assert choice.reference_within_slo_rps == {2.0: 0.0, 3.0: 0.0}
    assert "beats no policy" in choice.reason
    assert qualifies(results[2], ChoiceRule()) == (
        False, "rejected 0.16% at 0.8x (at most 0.1% allowed)")
    # a looser rule admits the 0.16% one
    assert choose_policy(results, ChoiceRule(max_nominal_rejected=0.002)).policy == T88


def test_among_equals_the_simpler_policy_wins() -> None:
    results = [result(NONE, 0, 100, 50), result(T88Q50, 0, 800, 800), result(T88, 0, 800, 800)]
    assert choose_policy(results).policy == T88


def test_among_answers_within_the_noise_the_longer_timeout_wins() -> None:
    # 88 ms answers 1600 within the SLO over 2x and 3x, 125 ms 1560: two standard errors of
    # the difference are about 14/s of 8 s, the difference 5/s. A longer timeout never sheds
    # more at the nominal load on the same config: 125 ms is taken, though one window each
    # showed no rejection for either.
    results = [result(NONE, 0, 0, 0), result(T88, 0, 800, 800), result(T125, 0, 790, 770)]
    choice = choose_policy(results)
    assert choice.policy == T125 and choice.helps
    # Beyond the noise, the most answers win.
    results[2] = result(T125, 0, 700, 650)
    assert choose_policy(results).policy == T88
    # The longer timeout is preferred over a window that happened to shed less.
    def shedding(policy: OverloadPolicy, shed: int) -> PolicyResult:
        return PolicyResult(policy, (figures(0.8, 2000 - shed, requests=2000, rejected=shed),
                                     figures(2.0, 800, requests=1600, rejected=800),
                                     figures(3.0, 790, requests=2400, rejected=1610)))

    results[1:] = [shedding(T88, 0), shedding(T125, 1)]  # 0.05%: both qualify
    assert choose_policy(results).policy == T125


def test_a_policy_shedding_at_least_as_much_as_a_disqualified_one_is_never_chosen() -> None:
    assert T50.sheds_at_least_as_much_as(T88) and not T88.sheds_at_least_as_much_as(T50)
    assert T88Q50.sheds_at_least_as_much_as(T88) and not T88.sheds_at_least_as_much_as(T88Q50)
    assert Q50.sheds_at_least_as_much_as(OverloadPolicy(max_queue_size=80))
    assert not Q50.sheds_at_least_as_much_as(T88) and not T88.sheds_at_least_as_much_as(Q50)
    # 88 ms showed no rejection in its first window and was turned down on its confirmation;
    # 50 ms showed none in its window too, but on the same config and load it rejects at
    # least what 88 ms rejects: it is not chosen in its place.
    turned_down = PolicyResult(T88, result(T88, 0, 800, 800).levels, "disqualified",
                               "rejected 0.12% at 0.8x with its confirmation")
    results = [result(NONE, 0, 0, 0), result(T50, 0, 900, 900), turned_down]
    choice = choose_policy(results)
    assert choice.policy == NONE and not choice.helps
    assert ("timeout 50ms REJECT sheds at least as much at 0.8x as timeout 88ms REJECT, "
            "which was disqualified there") in choice.reason
    # A longer timeout is not implicated, nor a policy of another kind.
    results += [result(T125, 0, 700, 700), result(Q50, 0, 650, 650)]
    assert choose_policy(results).policy == T125
    # Measured beyond the limit without being stopped (the benchmark measures every level).
    results = [result(NONE, 0, 0, 0), result(T50, 0, 900, 900), result(T88, 2, 800, 800)]
    assert not choose_policy(results).helps


def test_no_policy_helps_when_none_beats_the_reference_beyond_noise() -> None:
    same = [result(NONE, 0, 800, 790), result(T88, 0, 810, 800), result(Q50, 0, 300, 100)]
    choice = choose_policy(same)
    assert choice.policy == NONE and not choice.helps
    assert choice.reason.startswith("no policy helps: the best, timeout 88ms REJECT")
    # a large relative gain on a handful of answers is still noise
    few = [result(NONE, 0, 8, 4), result(T88, 0, 14, 8)]
    assert not choose_policy(few).helps
    # none qualifies at the nominal load
    shedding = [result(NONE, 0, 0, 0), result(T50, 100, 800, 800)]
    choice = choose_policy(shedding)
    assert choice.policy == NONE and "none kept its rejections within 0.1%" in choice.reason


def test_a_few_answers_where_no_policy_answers_none_are_no_help() -> None:
    def at(level: float, within: int, requests: int) -> LevelFigures:
        latency = [50_000.0] * within + [2e6] * (requests - within)
        outcomes = [OK] * within + [LATE] * (requests - within)
        return level_figures(level, level * 200.0, 4.0, latency, outcomes, SLO)

    reference = PolicyResult(NONE, (at(0.8, 640, 640), at(2.0, 0, 1600), at(3.0, 0, 2400)))
    # 6 req/s more within the SLO over 2x and 3x: beyond the counts' noise, but 3% of the
    # 200 req/s goodput
    few = PolicyResult(Q50, (at(0.8, 640, 640), at(2.0, 30, 1600), at(3.0, 18, 2400)))
    choice = choose_policy([reference, few])
    assert not choice.helps and choice.reason.startswith("no policy helps")
    many = PolicyResult(Q50, (at(0.8, 640, 640), at(2.0, 300, 1600), at(3.0, 200, 2400)))
    assert choose_policy([reference, many]).helps


def test_disqualified_or_failed_policies_are_never_chosen_and_the_reference_is_needed() -> None:
    disq = PolicyResult(T50, (figures(0.8, 500, requests=640, rejected=140),), "disqualified",
                        "rejected 21.88% at 0.8x")
    failed = PolicyResult(Q50, (), "failed", "Triton refused it")
    results = [result(NONE, 0, 10, 0), disq, failed, result(T125, 0, 700, 650)]
    assert choose_policy(results).policy == T125
    assert qualifies(failed, ChoiceRule()) == (False, "Triton refused it")
    with pytest.raises(ValueError, match="reference"):
        choose_policy([result(T125, 0, 700, 650)])
    with pytest.raises(ValueError, match="reference"):
        choose_policy([PolicyResult(NONE, (figures(0.8, 640, requests=640),))])


def test_result_to_best_json_and_back() -> None:
    results = (result(NONE, 0, 0, 0), result(T88, 0, 860, 870),
               PolicyResult(Q50, (), "failed", "Triton refused it"))
    outcome = OverloadResult(200.0, SLO, Candidate(16, 0, 1).to_dict(), results,
                             choose_policy(results), notes=("a note",))
    data = outcome.to_dict()
    text = json.dumps(data, allow_nan=False)  # plain JSON: no NaN or Infinity
    assert data["chosen"]["policy"]["label"] == "timeout 88ms REJECT"
    assert data["chosen"]["queue_policy"] == {"timeout_action": "REJECT",
                                              "default_timeout_microseconds": "88000"}
    assert data["holds_at_2x_rps"] == 215.0
    level = data["policies"][1]["levels"][1]
    assert level["within_slo_rps"] == 215.0 and level["p99_answered"]["n"] == 860
    assert level["rejected_share"] == pytest.approx(740 / 1600)
    assert data["policies"][0]["levels"][1]["p99_answered"]["p99_us"] is None  # none answered
    back = OverloadResult.from_dict(json.loads(text))
    assert back.to_dict() == data
    assert back.holds_at(2.0) == 215.0
    assert back.chosen_result() is not None and back.chosen_result().policy == T88


def test_slow_rejections_are_named() -> None:
    quick = result(T88, 0, 800, 800)  # rejections at 100 ms
    assert slow_rejections(quick, SLO) is None
    slow = level_figures(3.0, 600.0, 1.0, [50_000.0] * 10 + [520_000.0] * 10,
                         [OK] * 10 + [TIMEOUT] * 10, SLO)
    late = PolicyResult(T50, (*quick.levels[:2], slow))
    note = slow_rejections(late, SLO)
    assert note is not None and note.startswith("timeout 50ms REJECT: its rejections took 520 ms")
    assert "at 3x (n=10)" in note
    assert slow_rejections(result(NONE, 0, 0, 0), SLO) is None  # no rejections at all


# -- confirming the choice --------------------------------------------------------------------

def confirmed(policy: OverloadPolicy, first_shed: int, again_shed: int, *,
              again: int = 3000) -> PolicyResult:
    """Measured at every level (nothing shed at 0.8x in 1000 unless `first_shed`), and its
    0.8x level again: `again_shed` of `again` rejected."""
    base = result(policy, 0, 860, 870)
    first = figures(0.8, 1000 - first_shed, requests=1000, rejected=first_shed)
    return PolicyResult(policy, (first, *base.levels[1:]), confirmation=figures(
        0.8, again - again_shed, requests=again, rejected=again_shed, seconds=20.0))


def test_the_confirmation_counts_with_the_first_window() -> None:
    rule = ChoiceRule()
    ok, bad = confirmed(T88, 1, 2), confirmed(T88, 1, 6)
    assert ok.rejected_at(0.8) == (3, 4000) and bad.rejected_at(0.8) == (7, 4000)
    assert result(T88, 0, 860, 870).rejected_at(0.8) == (0, 640)  # no confirmation
    assert ok.rejected_at(2.0) == (1600 - 860, 1600)  # only the nominal level has one
    assert qualifies(ok, rule) == (True, "")
    passed, why = qualifies(bad, rule)
    assert not passed and "0.18% at 0.8x with its confirmation (7 of 4,000" in why
    # Turned down on its confirmation, the next policy is chosen.
    results = [result(NONE, 0, 0, 0), bad, result(T125, 0, 700, 650)]
    assert choose_policy(results, rule).policy == T125
    assert choose_policy([result(NONE, 0, 0, 0), ok], rule).policy == T88


def test_a_confirmation_in_best_json_the_summary_and_the_table() -> None:
    from triton_ops.tune.overload.report import overload_lines, policy_table_html

    results = (result(NONE, 0, 0, 0), confirmed(T88, 0, 2))
    outcome = OverloadResult(200.0, SLO, Candidate(16, 0, 1).to_dict(), results,
                             choose_policy(results))
    data = json.loads(json.dumps(outcome.to_dict(), allow_nan=False))
    assert data["policies"][1]["confirmation"]["requests"] == 3000
    assert data["policies"][0]["confirmation"] is None
    assert OverloadResult.from_dict(data).to_dict() == data
    best = {"overload": data, "overload_stage": {"window_s": 4.0, "warmup_s": 1.0}}
    (_, text, tone), = overload_lines(best)
    assert tone == "good" and "0.05% rejected at 0.8x (2 of 4,000 requests in two windows)" in text
    assert "0.8x again (150)" in policy_table_html(best)


def test_the_stage_does_not_measure_a_policy_a_disqualified_one_implies() -> None:
    from triton_ops.tune.overload.measure import OverloadSettings, _StageRun

    events: list[object] = []
    # No target and no load generator: a policy that were measured would fail here.
    run = _StageRun(None, None, 200.0, SLO, OverloadSettings(), ChoiceRule(), None,  # type: ignore[arg-type]
                    events.append)
    turned_down = PolicyResult(T88, (), "disqualified", "rejected 0.12% at 0.8x")
    got = run.measure_all([T50, T88Q50], known=[turned_down])
    assert [r.status for r in got] == ["disqualified", "disqualified"]
    assert got[0].reason == ("sheds at least as much at 0.8x as timeout 88ms REJECT, which "
                             "was disqualified there")
    assert len(events) == 2
