"""The dynamic-batcher simulation on hand-checkable arrival sequences."""

from __future__ import annotations

import math

import pytest

from triton_ops.tune.batcher import (
    Candidate,
    ServiceProfile,
    predict_goodput,
    predict_p99_us,
    simulate,
)

FLAT = ServiceProfile({1: 1000.0, 8: 1000.0})  # any batch up to 8 costs 1 ms


def test_no_delay_dispatches_what_is_queued() -> None:
    # Requests at 0, 100, 200 us; one instance, 1 ms per batch, no queue delay:
    # request 0 goes alone, 100 and 200 queue behind it and go together at 1000.
    result = simulate(Candidate(8, 0, 1), FLAT, [0.0, 100.0, 200.0], warmup_fraction=0)
    assert result.batch_sizes == [1, 2]
    assert result.latencies_us == [1000.0, 1900.0, 1800.0]


def test_queue_delay_waits_for_more_requests() -> None:
    result = simulate(Candidate(8, 500, 1), FLAT, [0.0, 100.0, 200.0], warmup_fraction=0)
    assert result.batch_sizes == [3]
    # dispatched at 500 (the oldest waited max_queue_delay), done at 1500
    assert result.latencies_us == [1500.0, 1400.0, 1300.0]


def test_full_batch_goes_without_waiting() -> None:
    result = simulate(Candidate(2, 10_000, 1), FLAT, [0.0, 100.0], warmup_fraction=0)
    assert result.batch_sizes == [2]
    assert result.latencies_us == [1100.0, 1000.0]


def test_preferred_size_dispatches_early() -> None:
    arrivals = [0.0, 10.0, 20.0, 30.0]
    result = simulate(Candidate(8, 5000, 1, (4,)), FLAT, arrivals, warmup_fraction=0)
    assert result.batch_sizes == [4]
    assert result.latencies_us[-1] == 1000.0


def test_instances_run_in_parallel_with_efficiency() -> None:
    arrivals = [0.0, 0.0]
    perfect = simulate(Candidate(1, 0, 2), FLAT, arrivals, warmup_fraction=0)
    assert perfect.latencies_us == [1000.0, 1000.0]
    shared = ServiceProfile({1: 1000.0}, parallel_efficiency=0.0)
    taking_turns = simulate(Candidate(1, 0, 2), shared, arrivals, warmup_fraction=0)
    # Second execution starts while the first runs, both on the same core: twice as slow.
    assert taking_turns.latencies_us == [1000.0, 2000.0]


def test_overhead_is_added() -> None:
    profile = ServiceProfile({1: 1000.0}, overhead_us=250.0)
    assert simulate(Candidate(1, 0, 1), profile, [0.0], warmup_fraction=0).latencies_us == [1250.0]


def test_service_time_interpolation() -> None:
    p = ServiceProfile({1: 100.0, 4: 400.0, 8: 600.0})
    assert p.service_us(2) == pytest.approx(200.0)
    assert p.service_us(6) == pytest.approx(500.0)
    assert p.service_us(16) == pytest.approx(1000.0)  # extrapolated from 4 and 8
    assert ServiceProfile({2: 100.0}).service_us(4) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        ServiceProfile({})


def test_batching_raises_predicted_goodput_when_batches_are_cheap() -> None:
    profile = ServiceProfile({1: 800.0, 8: 1200.0, 32: 2800.0}, overhead_us=200.0)
    slo = 10_000.0
    no_batch = predict_goodput(Candidate(1, 0, 1), profile, slo)
    batch32 = predict_goodput(Candidate(32, 0, 1), profile, slo)
    assert no_batch < 1250  # capacity of one request per 0.8 ms
    assert batch32 > 4 * no_batch


def test_p99_grows_with_rate_and_is_inf_over_capacity() -> None:
    c = Candidate(8, 0, 1)
    profile = ServiceProfile({1: 800.0, 8: 1200.0})
    low = predict_p99_us(c, profile, 200.0)
    high = predict_p99_us(c, profile, 5000.0)
    assert low < high
    assert math.isinf(predict_p99_us(c, profile, profile.capacity(c) * 1.1))


def test_tight_slo_prefers_short_delay() -> None:
    profile = ServiceProfile({1: 300.0, 16: 900.0})
    slo = 2500.0
    short = predict_goodput(Candidate(16, 100, 1), profile, slo)
    long = predict_goodput(Candidate(16, 2000, 1), profile, slo)
    assert short > long


def test_candidate_round_trip_and_validation() -> None:
    c = Candidate(16, 500, 2, (4, 8))
    assert Candidate.from_dict(c.to_dict()) == c
    assert "mbs16" in c.key and "pref4-8" in c.key
    with pytest.raises(ValueError):
        Candidate(4, 0, 0)
    with pytest.raises(ValueError):
        Candidate(4, 0, 1, (8,))
    profile = ServiceProfile({1: 100.0, 4: 200.0}, overhead_us=5, parallel_efficiency=0.5)
    assert ServiceProfile.from_dict(profile.to_dict()).batch_us == profile.batch_us


def test_system_ceiling_adds_a_per_request_cost() -> None:
    # Executions alone would allow 1 / (100 us) = 10,000 req/s at batch 8; the system was
    # seen to top out at 2,000 req/s with batch 8: 400 us per request elsewhere.
    p = ServiceProfile({1: 100.0, 8: 800.0}, ceiling_rps=2000.0, ceiling_batch=8)
    assert p.request_cost_us == pytest.approx(400.0)
    assert p.capacity(Candidate(8, 0, 1)) == pytest.approx(2000.0)
    assert p.capacity(Candidate(1, 0, 1)) == pytest.approx(2000.0)
    cheap_batches = ServiceProfile({1: 1000.0, 8: 1200.0}, ceiling_rps=2000.0, ceiling_batch=8)
    # Batching still wins when executions have a fixed cost, ceiling or not.
    assert cheap_batches.capacity(Candidate(8, 0, 1)) > 2 * cheap_batches.capacity(
        Candidate(1, 0, 1))
    again = ServiceProfile.from_dict(p.to_dict())
    assert again.request_cost_us == pytest.approx(400.0)


def test_shared_cores_charge_the_whole_machine_per_request() -> None:
    # 1,000 req/s at the ceiling with batch 4 on a 2-core machine shared with the client:
    # 2,000 core-us per request, of which 250 us are the execution's share.
    p = ServiceProfile({4: 1000.0}, ceiling_rps=1000.0, ceiling_batch=4, shared_cores=2)
    assert p.request_cost_us == pytest.approx(1750.0)
    # the same cost per request on the same cores: the ceiling again, whatever the batch size
    assert p.capacity(Candidate(64, 0, 1)) == pytest.approx(1000.0)
    assert p.capacity(Candidate(64, 0, 2)) == pytest.approx(1000.0)


def test_gpu_model_is_bounded_by_the_cores_the_requests_use() -> None:
    # A GPU model on a 16-core machine: 3,500 req/s at the ceiling (batch 64, 6.2 ms per
    # execution) kept 4 cores busy. The executions are not CPU work: 4e6/3500 core-us per
    # request, so the cores allow 16e6 / 1143 = 14,000 req/s; one instance allows 10,300.
    p = ServiceProfile({1: 6000.0, 64: 6200.0}, ceiling_rps=3500.0, ceiling_batch=64,
                       shared_cores=16, busy_cores=4.0, cpu_model=False)
    assert p.request_cost_us == pytest.approx(4e6 / 3500)
    assert p.capacity(Candidate(64, 0, 1)) == pytest.approx(64 / 6200e-6)
    assert p.capacity(Candidate(64, 0, 2)) == pytest.approx(14_000.0)
    # Not measured: all 16 cores assumed busy, so each request is charged 16 core-ms / 3500
    saturated = ServiceProfile({1: 6000.0, 64: 6200.0}, ceiling_rps=3500.0, ceiling_batch=64,
                               shared_cores=16, cpu_model=False)
    assert saturated.capacity(Candidate(64, 0, 2)) == pytest.approx(3500.0)
    again = ServiceProfile.from_dict(p.to_dict())
    assert (again.busy_cores, again.cpu_model) == (4.0, False)
    # The simulation charges a GPU model's batches only their executions
    assert predict_goodput(Candidate(64, 0, 1), p, 100_000) > 0.9 * 64 / 6200e-6


def test_cpu_executions_share_the_cores_the_requests_leave() -> None:
    # 2 cores; at the ceiling (1000 req/s, batch 1) 1.5 cores were busy: 1.5 ms of CPU per
    # request, 1 ms of it the execution, so each request costs 0.5 ms of CPU besides.
    measured = {"batch_us": {1: 1000.0}, "ceiling_rps": 1000.0, "ceiling_batch": 1,
                "shared_cores": 2, "busy_cores": 1.5}
    cpu = ServiceProfile(**measured, cpu_model=True)  # type: ignore[arg-type]
    assert cpu.request_cost_us == pytest.approx(500.0)
    # 3 requests in 2 ms (1500 req/s): requests take 0.75 core, executions share 1.25 cores.
    arrivals = [0.0, 0.0, 2000.0]
    lat = simulate(Candidate(1, 0, 2), cpu, arrivals, warmup_fraction=0).latencies_us
    assert lat == pytest.approx([1000.0, 1600.0, 1000.0])  # the 2nd runs beside the 1st
    # A GPU model's executions do not compete for the cores.
    gpu = ServiceProfile(**measured, cpu_model=False)  # type: ignore[arg-type]
    lat = simulate(Candidate(1, 0, 2), gpu, arrivals, warmup_fraction=0).latencies_us
    assert lat == pytest.approx([1000.0, 1000.0, 1000.0])


def test_stalled_batcher_waits_for_the_next_arrival() -> None:
    # Requests at 0, 100, 200 and 5000 us; 1 ms per batch. Without a stall, 100 and 200 go
    # together when the instance frees at 1000; when the batcher stalls after every
    # hand-over (as Triton's may with a queue policy), they wait for the arrival at 5000.
    arrivals = [0.0, 100.0, 200.0, 5000.0]
    plain = simulate(Candidate(8, 0, 1), FLAT, arrivals, warmup_fraction=0)
    assert plain.batch_sizes == [1, 2, 1]
    stalled = simulate(Candidate(8, 0, 1), FLAT, arrivals, warmup_fraction=0, stall_share=1.0)
    assert stalled.batch_sizes == [1, 3]
    assert stalled.waits_us == [0.0, 4900.0, 4800.0, 0.0]
    # A stall needs requests queued at the hand-over: an idle instance starts at once.
    idle = simulate(Candidate(8, 0, 1), FLAT, [0.0, 3000.0], warmup_fraction=0,
                    stall_share=1.0)
    assert idle.waits_us == [0.0, 0.0]


def test_stalls_lengthen_the_queue_wait_tail() -> None:
    from triton_ops.tune.batcher import poisson_arrivals_us, predict_wait_share

    profile = ServiceProfile({1: 20_000.0, 16: 60_000.0})
    candidate = Candidate(16, 0, 1)
    without = predict_wait_share(candidate, profile, 150.0, 50_000.0, stall_share=0.0)
    with_stalls = predict_wait_share(candidate, profile, 150.0, 50_000.0, stall_share=0.25)
    assert with_stalls > without
    # The same seed draws the same stalls: a prediction repeats.
    arrivals = poisson_arrivals_us(150.0, 2000, seed=3)
    a = simulate(candidate, profile, arrivals, stall_share=0.25, seed=3)
    b = simulate(candidate, profile, arrivals, stall_share=0.25, seed=3)
    assert a.waits_us == b.waits_us
