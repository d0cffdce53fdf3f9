"""A worker's run schedule and how it tells what became of a request (plain data)."""

from __future__ import annotations

import asyncio

import pytest
from tritonclient.utils import InferenceServerException

from triton_ops.loadgen.outcome import Outcome, outcome_of
from triton_ops.loadgen.worker import TAIL_MAX_S, RunSchedule

SPEC = {"start_at": 100.0, "warmup_s": 2.0, "window_s": 0.5, "max_windows": 4,
        "mode": "open", "rate": 10.0, "timeout_s": 1.0, "seed": 0}


def test_schedule_from_the_parents_spec() -> None:
    schedule = RunSchedule.from_spec({**SPEC, "start_at": "100", "max_windows": "4"})
    assert schedule == RunSchedule(start=100.0, warmup=2.0, window=0.5, max_windows=4)
    assert schedule.end == 104.0


def test_requests_scheduled_in_the_warmup_belong_to_no_window() -> None:
    schedule = RunSchedule.from_spec(SPEC)
    assert schedule.index_of(100.0) == -1
    assert schedule.index_of(101.999) == -1


def test_each_window_holds_what_was_scheduled_from_its_start_to_its_end() -> None:
    schedule = RunSchedule.from_spec(SPEC)
    assert schedule.index_of(102.0) == 0
    assert schedule.index_of(102.499) == 0
    assert schedule.index_of(102.5) == 1
    assert schedule.index_of(103.99) == 3
    assert [schedule.window_end(k) for k in range(4)] == [102.5, 103.0, 103.5, 104.0]


def test_arrivals_after_the_last_window_belong_to_none_and_end_within_the_tail() -> None:
    schedule = RunSchedule.from_spec(SPEC)
    assert schedule.index_of(104.0) == -1
    assert schedule.index_of(104.3) == -1
    assert schedule.tail_end(timeout_s=0.2) == pytest.approx(104.2)
    assert schedule.tail_end(timeout_s=30.0) == 104.0 + TAIL_MAX_S


@pytest.mark.parametrize(("exc", "outcome"), [
    (InferenceServerException("Exceeds maximum queue size", "StatusCode.UNAVAILABLE"),
     Outcome.REJECTED_QUEUE_FULL),
    (InferenceServerException("Request timeout expired", "StatusCode.UNAVAILABLE"),
     Outcome.REJECTED_TIMEOUT),
    (InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"),
     Outcome.CLIENT_TIMEOUT),
    (InferenceServerException("failed to connect", "StatusCode.UNAVAILABLE"), Outcome.ERROR),
    (ConnectionResetError("reset by peer"), Outcome.ERROR),
    (asyncio.TimeoutError(), Outcome.ERROR),
])
def test_a_failed_call_is_classified_by_triton_status_else_an_error(
        exc: Exception, outcome: Outcome) -> None:
    assert outcome_of(exc) is outcome
