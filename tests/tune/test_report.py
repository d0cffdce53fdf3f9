"""best.json's candidates, the summary a person reads first, "not confirmed", and report.html,
all from plain data (a scripted search on a fake clock)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from triton_ops.cli.tune import _print_best, apply_decision
from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.budget import FinalTiming
from triton_ops.tune.report import best_summary, render_html, summary_lines
from triton_ops.tune.results import CandidateResult, ProbeResult, SearchOutcome
from triton_ops.tune.search import run_search
from triton_ops.tune.stats import QuantileEstimate, Verdict

SLO_US = 50_000.0
PROFILE = ServiceProfile({1: 500.0, 32: 4000.0})
BASE, WIN, OTHER = Candidate(4, 0, 1), Candidate(32, 0, 1), Candidate(16, 2000, 2)
PREDICTED = {BASE: 200.0, WIN: 900.0, OTHER: 800.0}


class Server:
    """Probes pass at or below a capacity: one for the search, one for re-measurements."""

    def __init__(self, search: dict[Candidate, float], final: dict[Candidate, float]) -> None:
        self.search, self.final = search, final
        self.clock = 0.0
        self.loaded: Candidate | None = None

    def now(self) -> float:
        return self.clock

    def load(self, candidate: Candidate) -> str | None:
        self.clock += 2.0
        self.loaded = candidate
        return None

    def probe(self, candidate: Candidate, rate: float, *, final: bool = False) -> ProbeResult:
        self.clock += 7.0 if final else 4.0
        ok = rate <= (self.final if final else self.search)[candidate]
        p99 = (QuantileEstimate(0.99, 31_000.0, 29_500.0, 33_000.0, 1800, 0.95) if ok else
               QuantileEstimate(0.99, 64_000.0, 58_000.0, 71_000.0, 1700, 0.95))
        return ProbeResult(rate, Verdict.PASS if ok else Verdict.FAIL, p99, rate)


def run(final: dict[Candidate, float]) -> tuple[SearchOutcome, dict]:
    server = Server({BASE: 100.0, WIN: 400.0, OTHER: 300.0}, final)
    base = CandidateResult(BASE, 200.0, 100.0,
                           QuantileEstimate(0.99, 30_000.0, 28_000.0, 32_000.0, 900, 0.95),
                           seconds=14.0, why="the current config")
    outcome = run_search([BASE, WIN, OTHER], PROFILE, SLO_US, server, budget_s=400.0,
                         clock=server.now, reserve_s=2.0, done=[base], baseline=base,
                         probe_s=4.0, timing=FinalTiming(load_s=2.0, final_probe_s=7.0),
                         predict=lambda c: PREDICTED[c])
    best = best_summary("accel_sim", SLO_US, outcome, base, PROFILE, [], elapsed_s=100.0,
                        budget_s=400.0)
    best["out_dir"] = "/tmp/out"
    return outcome, json.loads(json.dumps(best))  # as written to best.json


def printed(best: dict) -> str:
    buf = io.StringIO()
    _print_best(best, Console(file=buf, width=100, soft_wrap=True))
    return buf.getvalue()


def test_best_json_lists_every_candidate_predicted_and_measured() -> None:
    outcome, best = run({BASE: 100.0, WIN: 390.0, OTHER: 300.0})
    rows = {tuple(c["config"].values())[:3]: c for c in best["candidates"]}
    assert len(best["candidates"]) == 3
    win = rows[(32, 0, 1)]
    assert win["predicted_goodput"] == 900.0  # what it was ranked with, before measuring
    assert 0 < win["goodput"] <= 400.0 and win["status"] == "measured"
    assert win["p99"] == {"p99_us": 31_000.0, "ci_low_us": 29_500.0, "ci_high_us": 33_000.0,
                          "samples": 1800, "confidence": 0.95}
    assert win["why"].startswith("ranked first") and not win["baseline"]
    assert win["remeasured_goodput"] == best["goodput"] > 0
    assert rows[(4, 0, 1)]["baseline"] and rows[(4, 0, 1)]["why"] == "the current config"
    assert best["confirmed"] is True
    assert [p["rate"] for p in best["remeasurements"]][-1] == best["goodput"]


def test_summary_says_what_to_do_in_a_few_lines() -> None:
    _, best = run({BASE: 100.0, WIN: 390.0, OTHER: 300.0})
    lines = summary_lines(best)
    assert [line.label for line in lines] == ["decision", "goodput", "gain", "how sure", "next"]
    text = {line.label: line.text for line in lines}
    assert text["decision"] == "use max_batch_size 32, max_queue_delay 0 us, 1 instance"
    assert "p99 31.0 ms (95% CI 29.5-33.0 ms, 1,800 samples); SLO 50 ms: met" in text["goodput"]
    assert text["gain"].startswith(f"{best['goodput_vs_baseline']:.2f}x the current config")
    assert "upper bound is 34% under the SLO" in text["how sure"]
    assert "`triton-ops generate`" in text["next"]


def test_a_chosen_config_that_holds_nothing_is_not_confirmed() -> None:
    # Neither the winner nor the current config holds any rate in the longer re-measurement.
    outcome, best = run({BASE: 0.0, WIN: 0.0, OTHER: 0.0})
    assert best["confirmed"] is False and best["slo_met"] is False
    assert best["goodput"] is None  # never a goodput that was not measured
    tried = best["remeasurements"]
    assert tried and all(p["verdict"] == "fail" for p in tried)
    out = printed(best)
    assert "not confirmed" in out
    for p in tried:
        assert f"{p['rate']:.0f} req/s (p99 64.0 ms)" in out
    assert "goodput 0" not in out and "0 req/s at" not in out
    assert apply_decision(best)[0] is False


def test_report_html_opens_with_the_summary_then_candidates_then_plots() -> None:
    _, best = run({BASE: 100.0, WIN: 390.0, OTHER: 300.0})
    page = render_html(best, [("Throughput vs p99", "<svg>plot</svg>")])
    summary = page.index('class="summary"')
    table = page.index("<h2>Candidates")
    plot = page.index("<svg>plot</svg>")
    raw = page.index("<h2>best.json")
    assert summary < table < plot < raw
    assert "use max_batch_size 32, max_queue_delay 0 us, 1 instance" in page
    assert '<tr class="chosen">' in page and "32/0us/1" in page
    assert "4/0us/1 (current)" in page
    for c in best["candidates"]:
        assert f'<td class="num">{c["predicted_goodput"]:.0f}</td>' in page
    unconfirmed = render_html(run({BASE: 0.0, WIN: 0.0, OTHER: 0.0})[1], [])
    assert "not confirmed" in unconfirmed and "none held" in unconfirmed


def test_html_escapes_what_it_shows() -> None:
    _, best = run({BASE: 100.0, WIN: 390.0, OTHER: 300.0})
    best["model"] = "<script>x</script>"
    best["notes"] = ["<b>note</b>"]
    page = render_html(best, [])
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
