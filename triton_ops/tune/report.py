"""The outputs of a tune run: best.json and report.html (plots from measurements.csv).

`best_summary` turns a search outcome into best.json's content (plain data);
`summary_lines` turns best.json into the few lines a person reads first (the CLI prints them,
report.html opens with them). Only measured figures are reported: a config whose
re-measurement held no rate is "not confirmed", with the rates tried, never a goodput of 0.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_ops.fileio import atomic_write_text
from triton_ops.tune.batcher import Candidate, ServiceProfile
from triton_ops.tune.results import CandidateResult, ProbeResult, SearchOutcome
from triton_ops.tune.stats import QuantileEstimate


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _p99_dict(est: QuantileEstimate | None) -> dict[str, Any] | None:
    if est is None:
        return None
    return {"p99_us": _finite(est.value), "ci_low_us": _finite(est.low),
            "ci_high_us": _finite(est.high), "samples": est.n, "confidence": est.confidence}


def _probe_dict(final: ProbeResult) -> dict[str, Any]:
    return {
        "rate": final.rate, "verdict": final.verdict.value,
        "p99_us": _finite(final.p99.value), "p99_ci_low_us": _finite(final.p99.low),
        "p99_ci_high_us": _finite(final.p99.high), "confidence": final.p99.confidence,
        "samples": final.p99.n, "throughput": final.throughput,
        "error_rate": final.error_rate,
    }


def candidates_table(outcome: SearchOutcome | None) -> list[dict[str, Any]]:
    """Every candidate the search measured (or could not load), in the order measured: the
    prediction it was ranked with before it was measured, what it measured, and its
    re-measured goodput when it was re-measured."""
    if outcome is None:
        return []
    base_key = outcome.baseline.candidate.key if outcome.baseline else None
    rows = []
    for r in outcome.results:
        rem = outcome.remeasurement_of(r.candidate)
        rows.append({
            "config": r.candidate.to_dict(), "baseline": r.candidate.key == base_key,
            "status": r.status, "why": r.why, "predicted_goodput": r.predicted_goodput,
            "goodput": r.goodput if r.status == "measured" else None,
            "p99": _p99_dict(r.p99_at_goodput), "generator_limited": r.generator_limited,
            "probes": len(r.probes), "seconds": round(r.seconds, 1), "reason": r.reason,
            "remeasured_goodput": rem.rate if rem is not None else None,
        })
    return rows


def best_summary(model: str, slo_us: float, outcome: SearchOutcome | None,
                 baseline: CandidateResult | None, profile: ServiceProfile | None,
                 skipped: list[CandidateResult], *, elapsed_s: float,
                 budget_s: float) -> dict[str, Any]:
    """The content of best.json (plain data)."""
    results = outcome.results if outcome else []
    data: dict[str, Any] = {
        "model": model, "slo_p99_us": slo_us, "chosen": None, "goodput": 0.0,
        "elapsed_s": round(elapsed_s, 1), "budget_s": budget_s, "baseline": None,
        "measured_candidates": sum(1 for r in results if r.status == "measured"),
        "infeasible": [{"config": r.candidate.to_dict(), "reason": r.reason}
                       for r in results if r.status == "infeasible"],
        "skipped": [{"config": r.candidate.to_dict(), "reason": r.reason} for r in skipped],
        "profile": profile.to_dict() if profile else None,
        "calibration": outcome.calibration if outcome else None,
        "stopped_by_budget": outcome.stopped_by_budget if outcome else None,
        "search_stopped": {
            "reason": outcome.stop,
            "margin": outcome.stop_margin.to_dict() if outcome.stop_margin else None,
        } if outcome else None,
        "candidates": candidates_table(outcome),
    }
    if baseline is not None:
        data["baseline"] = {"config": baseline.candidate.to_dict(), "goodput": baseline.goodput,
                            "generator_limited": baseline.generator_limited}
    if outcome and outcome.best is not None:
        data["notes"] = list(outcome.notes)
        data["kept_baseline"] = outcome.keep_baseline
        if outcome.keep_baseline and outcome.baseline is not None:
            _kept_baseline(data, outcome)
        else:
            _winner_chosen(data, outcome, baseline)
        _confirmation(data, outcome)
    return data


def _kept_baseline(data: dict[str, Any], outcome: SearchOutcome) -> None:
    """The current config stays: report the baseline's own numbers, never the winner's."""
    base, best, final = outcome.baseline, outcome.best, outcome.final
    assert base is not None and best is not None
    data["chosen"] = base.candidate.to_dict()
    data["reason"] = outcome.reason
    data["search_goodput"] = base.goodput
    data["predicted_goodput"] = base.predicted_goodput
    data["generator_limited"] = base.generator_limited
    if outcome.baseline_final is not None:
        if data["baseline"] is not None:
            data["baseline"]["remeasured_goodput"] = outcome.baseline_final_rate
        data["goodput"] = outcome.baseline_final_rate
        data["goodput_source"] = "re-measured"
        data["remeasured"] = _probe_dict(outcome.baseline_final)
        data["slo_met"] = outcome.baseline_final_rate > 0
    else:
        # Not re-measured (no budget left): its search bisection is what was measured.
        data["goodput"] = base.goodput
        data["goodput_source"] = "search"
        p99 = base.p99_at_goodput
        data["remeasured"] = None if p99 is None else {
            "rate": base.goodput, "verdict": "pass", "source": "search",
            "p99_us": _finite(p99.value), "p99_ci_low_us": _finite(p99.low),
            "p99_ci_high_us": _finite(p99.high), "confidence": p99.confidence,
            "samples": p99.n}
        data["slo_met"] = base.goodput > 0 and p99 is not None
    data["winner"] = {
        "config": best.candidate.to_dict(), "search_goodput": best.goodput,
        "remeasured_goodput": outcome.final_rate if final is not None else None,
        "remeasured": _probe_dict(final) if final is not None else None,
    }
    data["goodput_vs_baseline"] = 1.0


def _winner_chosen(data: dict[str, Any], outcome: SearchOutcome,
                   baseline: CandidateResult | None) -> None:
    best, final = outcome.best, outcome.final
    assert best is not None
    data["chosen"] = best.candidate.to_dict()
    data["search_goodput"] = best.goodput
    data["predicted_goodput"] = best.predicted_goodput
    data["goodput"] = outcome.final_rate
    data["goodput_source"] = "re-measured"
    data["generator_limited"] = best.generator_limited
    data["slo_met"] = bool(final is not None and outcome.final_rate > 0)
    if final is not None:
        data["remeasured"] = _probe_dict(final)
    if outcome.baseline_final is not None and data["baseline"] is not None:
        data["baseline"]["remeasured_goodput"] = outcome.baseline_final_rate
    if baseline is not None and baseline.goodput > 0 and outcome.final_rate > 0:
        ref = (outcome.baseline_final_rate if outcome.baseline_final is not None
               and outcome.baseline_final_rate > 0 else baseline.goodput)
        data["goodput_vs_baseline"] = outcome.final_rate / ref


def _confirmation(data: dict[str, Any], outcome: SearchOutcome) -> None:
    """Whether the chosen config held a rate in its re-measurement, with every rate tried."""
    chosen = Candidate.from_dict(data["chosen"])
    rem = outcome.remeasurement_of(chosen)
    tried = [_probe_dict(p) for p in rem.probes] if rem is not None else []
    data["remeasurements"] = tried
    if not tried:
        data["confirmed"] = None  # not re-measured: its figures are the search's
    elif rem is not None and rem.held:
        data["confirmed"] = True
    else:
        # Held no rate it tried: there is no goodput to report, only what was tried.
        data["confirmed"] = False
        data["goodput"] = None
        data["slo_met"] = False


# ---- what a person reads first

@dataclass(frozen=True)
class SummaryLine:
    label: str
    text: str
    tone: str = ""  # good | warn | bad | "" (plain)


def config_label(config: dict[str, Any]) -> str:
    pref = config.get("preferred_batch_sizes") or []
    instances = config["instance_count"]
    return (f"max_batch_size {config['max_batch_size']}, max_queue_delay "
            f"{config['max_queue_delay_us']} us, {instances} instance"
            f"{'s' if instances != 1 else ''}" + (f", preferred {pref}" if pref else ""))


def short_label(config: dict[str, Any]) -> str:
    return (f"{config['max_batch_size']}/{config['max_queue_delay_us']}us/"
            f"{config['instance_count']}")


def _ms(us: float | None) -> str:
    return "?" if us is None else f"{us / 1000:.1f} ms"


def _num_ms(us: float | None) -> str:
    return "?" if us is None else f"{us / 1000:.1f}"


def _ci(low: float | None, high: float | None) -> str:
    """'29.5-33.0 ms'; an unbounded end as '?'."""
    return f"{_num_ms(low)}-{_num_ms(high)} ms"


def summary_lines(best: dict[str, Any]) -> list[SummaryLine]:
    """Decision, goodput against the SLO, gain over the current config, how sure, what next."""
    chosen = best.get("chosen")
    slo = f"SLO {best['slo_p99_us'] / 1000:g} ms"
    if not chosen:
        return [SummaryLine("decision", f"no config met the p99 {slo}", "bad"),
                SummaryLine("next", "check the model and the SLO (see the candidates below); "
                            "a longer --budget measures more configs")]
    if best.get("confirmed") is False:
        tried = ", ".join(f"{p['rate']:.0f} req/s (p99 {_ms(p['p99_us'])})"
                          for p in best.get("remeasurements", []))
        return [SummaryLine("decision", f"not confirmed: {config_label(chosen)} held no rate "
                            "it tried when re-measured", "bad"),
                SummaryLine("tried", f"{tried}; {slo}", "bad"),
                SummaryLine("next", "nothing to apply: measure again on a quieter machine or "
                            "with a longer --budget")]
    lines = [_decision(best, chosen), _goodput_line(best, slo), _gain_line(best),
             _sureness_line(best)]
    return ([line for line in lines if line is not None] + _stage_lines(best)
            + [_next_line(best, chosen)])


def _stage_lines(best: dict[str, Any]) -> list[SummaryLine]:
    """The overload stage and the capacity plan, when they ran."""
    from triton_ops.tune.overload.report import capacity_lines, overload_lines

    return [SummaryLine(*line) for line in overload_lines(best) + capacity_lines(best)]


def _decision(best: dict[str, Any], chosen: dict[str, Any]) -> SummaryLine:
    if best.get("kept_baseline"):
        return SummaryLine("decision", f"keep the current config ({config_label(chosen)}): "
                           f"{best.get('reason', '')}", "warn")
    return SummaryLine("decision", f"use {config_label(chosen)}", "good")


def _goodput_line(best: dict[str, Any], slo: str) -> SummaryLine:
    re = best.get("remeasured") or {}
    source = " (in the search; not re-measured)" if best.get("goodput_source") == "search" \
        else ""
    ok = best.get("slo_met")
    return SummaryLine(
        "goodput", f"{best['goodput']:.0f} req/s{source} at p99 {_ms(re.get('p99_us'))} "
        f"(95% CI {_ci(re.get('p99_ci_low_us'), re.get('p99_ci_high_us'))}, "
        f"{re.get('samples', 0):,} samples); {slo}: {'met' if ok else 'not met'}",
        "good" if ok else "bad")


def _gain_line(best: dict[str, Any]) -> SummaryLine | None:
    base = best.get("baseline")
    if not base or best.get("kept_baseline"):
        return None
    ratio = best.get("goodput_vs_baseline")
    again = base.get("remeasured_goodput")
    ref = (f"{again:.0f} req/s re-measured" if again
           else f"{base['goodput']:.0f} req/s in the search")
    if ratio is None:
        return None
    return SummaryLine("gain", f"{ratio:.2f}x the current config "
                       f"({short_label(base['config'])}: {ref})", "good" if ratio > 1 else "")


def _sureness_line(best: dict[str, Any]) -> SummaryLine:
    re = best.get("remeasured") or {}
    high, slo = re.get("p99_ci_high_us"), best["slo_p99_us"]
    parts = []
    if high is not None:
        parts.append(f"the p99's 95% upper bound is {100 * (1 - high / slo):.0f}% under the SLO"
                     if high <= slo else "the p99's 95% interval reaches above the SLO")
    parts.append(f"{best.get('measured_candidates', 0)} configs measured in "
                 f"{best.get('elapsed_s', 0):.0f} s of {best.get('budget_s', 0):.0f} s")
    notes = best.get("notes") or []
    steal = any("other guests of the host" in n for n in notes)
    if steal:
        parts.append("measured while other guests of the host took the CPU: less certain")
    return SummaryLine("how sure", "; ".join(parts), "warn" if steal or (
        high is not None and high > slo) else "")


def _next_line(best: dict[str, Any], chosen: dict[str, Any]) -> SummaryLine:
    policy = chosen_policy(best)
    queue = (f"batching.dynamic.default_queue_policy {policy['envelope']}"
             if policy is not None else "")
    if policy is not None and policy["config"] is not None:
        # The policy holds on another batching config than the goodput's: both go together.
        chosen = policy["config"]
    elif best.get("kept_baseline"):
        if not queue:
            return SummaryLine("next", "nothing to change")
        return SummaryLine("next", f"write {queue} into the envelope and run `triton-ops "
                           "generate`; `tune --apply` does both")
    settings = (f"batching.max_batch_size {chosen['max_batch_size']}, "
                f"batching.dynamic.max_queue_delay {chosen['max_queue_delay_us']}us, "
                f"instances count {chosen['instance_count']}" + (f", {queue}" if queue else ""))
    return SummaryLine("next", f"write it into the envelope ({settings}) and run "
                       "`triton-ops generate`; `tune --apply` does both")


def chosen_policy(best: dict[str, Any]) -> dict[str, Any] | None:
    """The queue policy the overload stage chose, when one helps: the policy, its envelope
    form as text, and the batching config it was measured on when that is not best.json's
    chosen one (else None); None when no policy helps."""
    overload = best.get("overload") or {}
    choice = overload.get("chosen")
    if not choice or not choice.get("helps"):
        return None
    from triton_ops.tune.overload.policy import OverloadPolicy

    policy = OverloadPolicy.from_dict(choice["policy"])
    settings = policy.envelope_dict() or {}
    text = "{" + ", ".join(f"{k}: {v}" for k, v in settings.items()) + "}"
    config = overload.get("config") or None
    if config == best.get("chosen"):
        config = None
    return {"policy": policy, "envelope": text, "config": config}


# ---- report.html

def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _throughput_plot(table: Any, slo_us: float, plt: Any) -> tuple[str, str]:
    per_probe = table.groupby(["probe", "candidate", "rate"], as_index=False).agg(
        throughput=("throughput", "mean"), p99_us=("p99_us", "max"))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for cand, grp in per_probe.groupby("candidate"):
        grp = grp.sort_values("throughput")
        ax.plot(grp["throughput"], grp["p99_us"] / 1000, marker="o", label=cand)
    ax.axhline(slo_us / 1000, color="red", linestyle="--", label="SLO p99")
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("p99 latency (ms), worst window")
    ax.set_yscale("log")
    ax.legend(fontsize=6, loc="upper left")
    ax.set_title("Throughput vs p99 per config")
    return "Throughput vs p99", _svg(fig)


def _breakdown_plot(table: Any, plt: Any) -> tuple[str, str] | None:
    phases = ["server_queue_us", "server_compute_input_us", "server_compute_infer_us",
              "server_compute_output_us"]
    if not all(p in table.columns for p in phases):
        return None
    passed = table[table["verdict"] == "pass"]
    if not len(passed):
        return None
    top = passed.loc[passed.groupby("candidate")["rate"].idxmax()]
    means = top.groupby("candidate")[phases].mean()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = None
    for p in phases:
        vals = means[p] / 1000
        ax.barh(means.index, vals, left=bottom, label=p.removeprefix("server_"))
        bottom = vals if bottom is None else bottom + vals
    ax.set_xlabel("ms per request at the highest passing rate")
    ax.legend(fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    ax.set_title("Latency breakdown inside Triton: queue vs compute")
    return "Latency breakdown", _svg(fig)


def _batch_plot(table: Any, plt: Any) -> tuple[str, str] | None:
    if "server_avg_batch" not in table.columns:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for cand, grp in table.groupby("candidate"):
        g = grp.groupby("rate", as_index=False)["server_avg_batch"].mean().sort_values("rate")
        ax.plot(g["rate"], g["server_avg_batch"], marker=".", label=cand)
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("average executed batch size")
    ax.legend(fontsize=6)
    ax.set_title("Batch sizes executed")
    return "Batch sizes executed", _svg(fig)


def _prediction_plot(results: list[CandidateResult], plt: Any) -> tuple[str, str] | None:
    measured = [r for r in results if r.status == "measured" and r.predicted_goodput > 0]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    xs = [r.predicted_goodput for r in measured]
    ys = [r.goodput for r in measured]
    ax.scatter(xs, ys)
    for r in measured:
        ax.annotate(short_label(r.candidate.to_dict()), (r.predicted_goodput, r.goodput),
                    fontsize=7)
    top = max(xs + ys) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="measured = predicted")
    ax.set_xlabel("predicted goodput (req/s)")
    ax.set_ylabel("measured goodput (req/s)")
    ax.legend(fontsize=7)
    ax.set_title("Predicted vs measured goodput")
    return "Predicted vs measured", _svg(fig)


def _plots(table: Any, results: list[CandidateResult], slo_us: float,
           best: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str] | None] = []
    if table is not None and len(table):
        # Plots name configs as people read them (64/500us/1), not by their keys.
        if {"max_batch_size", "max_queue_delay_us", "instance_count"} <= set(table.columns):
            table = table.assign(candidate=[
                short_label({"max_batch_size": m, "max_queue_delay_us": d, "instance_count": i})
                for m, d, i in zip(table["max_batch_size"], table["max_queue_delay_us"],
                                   table["instance_count"], strict=True)])
        plots += [_throughput_plot(table, slo_us, plt), _breakdown_plot(table, plt),
                  _batch_plot(table, plt)]
    plots.append(_prediction_plot(results, plt))
    from triton_ops.tune.overload.report import overload_plot

    overload = overload_plot(best, plt)
    if overload is not None:
        plots.append((overload[0], _svg(overload[1])))
    return [p for p in plots if p is not None]


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
.summary{border:2px solid #ccc;border-radius:8px;padding:0.6em 1.2em;margin-bottom:1.5em}
.summary p{margin:0.4em 0;font-size:16px;display:grid;grid-template-columns:7em 1fr;
align-items:baseline}.summary .label{color:#666;font-size:14px;text-transform:uppercase}
.good{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}
.summary .decision{font-size:22px;font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
td.num{text-align:right}tr.chosen{background:#eaf5ea}pre{background:#f5f5f5;padding:1em}"""


def _summary_html(best: dict[str, Any]) -> str:
    rows = []
    for line in summary_lines(best):
        cls = " ".join(c for c in (line.tone, "decision" if line.label == "decision" else "")
                       if c)
        rows.append(f'<p><span class="label">{html.escape(line.label)}</span>'
                    f'<span class="{cls}">{html.escape(line.text)}</span></p>')
    return f'<div class="summary">{"".join(rows)}</div>'


def _candidate_rows(best: dict[str, Any]) -> str:
    chosen = best.get("chosen")
    rows = []
    for c in best.get("candidates", []):
        p99 = c.get("p99") or {}
        measured = "-" if c["goodput"] is None else f"{c['goodput']:.0f}"
        again = c.get("remeasured_goodput")
        cells = [
            html.escape(short_label(c["config"]) + (" (current)" if c["baseline"] else "")),
            html.escape(c.get("why") or ""), f"{c['predicted_goodput']:.0f}", measured,
            f"{_ms(p99.get('p99_us'))} ({_ci(p99.get('ci_low_us'), p99.get('ci_high_us'))}, "
            f"n={p99.get('samples', 0)})" if p99 else "-",
            "-" if again is None else ("none held" if again == 0 else f"{again:.0f}"),
            html.escape(c["status"] + (f": {c['reason']}" if c.get("reason") else "")),
        ]
        cls = ' class="chosen"' if c["config"] == chosen else ""
        rows.append(f"<tr{cls}>" + "".join(
            f'<td class="num">{v}</td>' if i in (2, 3, 5) else f"<td>{v}</td>"
            for i, v in enumerate(cells)) + "</tr>")
    return "".join(rows)


def render_html(best: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    """report.html: the summary, the candidates (predicted vs measured), the plots, and
    best.json for reference (plain data in, HTML out)."""
    from triton_ops.tune.overload.report import policy_table_html

    figures = "".join(f"<h2>{html.escape(t)}</h2>{svg}" for t, svg in plots)
    stopped = (best.get("search_stopped") or {}).get("reason") or ""
    model = html.escape(best["model"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>triton-ops tune: {model}</title>
<style>{_STYLE}</style></head><body>
<h1>tune: {model}</h1>
{_summary_html(best)}
<h2>Candidates, in the order measured</h2>
<p>The predicted goodput is what the model ranked each candidate with before it was measured.
{f"The search stopped: {html.escape(stopped)}." if stopped else ""}</p>
<table><tr><th>config</th><th>why measured</th><th>predicted (req/s)</th>
<th>measured (req/s)</th><th>p99 at that rate (95% CI, samples)</th>
<th>re-measured (req/s)</th><th>status</th></tr>{_candidate_rows(best)}</table>
{policy_table_html(best)}
{figures}
<h2>best.json</h2>
<details><summary>show</summary><pre>{html.escape(json.dumps(best, indent=2))}</pre></details>
</body></html>
"""


def write_report(out_dir: Path, best: dict[str, Any], outcome: SearchOutcome | None,
                 slo_us: float) -> None:
    """Write best.json (`best`) and report.html (plots from measurements.csv)."""
    atomic_write_text(out_dir / "best.json", json.dumps(best, indent=2) + "\n")
    table = None
    csv_path = out_dir / "measurements.csv"
    if csv_path.exists() and csv_path.stat().st_size > 0:
        import pandas as pd

        table = pd.read_csv(csv_path)
    results = list(outcome.results) if outcome else []
    atomic_write_text(out_dir / "report.html",
                      render_html(best, _plots(table, results, slo_us, best)))
