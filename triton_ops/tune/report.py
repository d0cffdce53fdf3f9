"""The outputs of a tune run: best.json and report.html (plots from measurements.csv)."""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

from triton_ops.fileio import atomic_write_text
from triton_ops.tune.batcher import ServiceProfile
from triton_ops.tune.results import CandidateResult, ProbeResult, SearchOutcome


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def best_summary(model: str, slo_us: float, outcome: SearchOutcome | None,
                 baseline: CandidateResult | None, profile: ServiceProfile | None,
                 skipped: list[CandidateResult], *, elapsed_s: float,
                 budget_s: float) -> dict[str, Any]:
    """The content of best.json (plain data)."""
    results = outcome.results if outcome else []
    data: dict[str, Any] = {
        "model": model,
        "slo_p99_us": slo_us,
        "chosen": None,
        "goodput": 0.0,
        "elapsed_s": round(elapsed_s, 1),
        "budget_s": budget_s,
        "baseline": None,
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
    }
    if baseline is not None:
        data["baseline"] = {"config": baseline.candidate.to_dict(), "goodput": baseline.goodput,
                            "generator_limited": baseline.generator_limited}
    if outcome and outcome.best is not None:
        best = outcome.best
        final = outcome.final
        data["notes"] = list(outcome.notes)
        data["kept_baseline"] = outcome.keep_baseline
        if outcome.keep_baseline and outcome.baseline is not None:
            # The current config stays: report the baseline's own numbers, never the winner's.
            base = outcome.baseline
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
            return data
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
        if baseline is not None and baseline.goodput > 0:
            ref = (outcome.baseline_final_rate if outcome.baseline_final is not None
                   and outcome.baseline_final_rate > 0 else baseline.goodput)
            data["goodput_vs_baseline"] = outcome.final_rate / ref
    return data


def _probe_dict(final: ProbeResult) -> dict[str, Any]:
    return {
        "rate": final.rate, "verdict": final.verdict.value,
        "p99_us": _finite(final.p99.value), "p99_ci_low_us": _finite(final.p99.low),
        "p99_ci_high_us": _finite(final.p99.high), "confidence": final.p99.confidence,
        "samples": final.p99.n, "throughput": final.throughput,
        "error_rate": final.error_rate,
    }


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plots(table: Any, results: list[CandidateResult], slo_us: float) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    if table is not None and len(table):
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
        out.append(("Throughput vs p99", _svg(fig)))
        phases = ["server_queue_us", "server_compute_input_us", "server_compute_infer_us",
                  "server_compute_output_us"]
        if all(p in table.columns for p in phases):
            passed = table[table["verdict"] == "pass"]
            if len(passed):
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
                out.append(("Latency breakdown", _svg(fig)))
        if "server_avg_batch" in table.columns:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for cand, grp in table.groupby("candidate"):
                g = grp.groupby("rate", as_index=False)["server_avg_batch"].mean()
                g = g.sort_values("rate")
                ax.plot(g["rate"], g["server_avg_batch"], marker=".", label=cand)
            ax.set_xlabel("arrival rate (req/s)")
            ax.set_ylabel("average executed batch size")
            ax.legend(fontsize=6)
            ax.set_title("Batch sizes executed")
            out.append(("Batch sizes executed", _svg(fig)))
    measured = [r for r in results if r.status == "measured" and r.predicted_goodput > 0]
    if measured:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        xs = [r.predicted_goodput for r in measured]
        ys = [r.goodput for r in measured]
        ax.scatter(xs, ys)
        for r in measured:
            ax.annotate(r.candidate.key, (r.predicted_goodput, r.goodput), fontsize=5)
        top = max(xs + ys) * 1.05
        ax.plot([0, top], [0, top], color="grey", linestyle=":", label="measured = predicted")
        ax.set_xlabel("predicted goodput (req/s)")
        ax.set_ylabel("measured goodput (req/s)")
        ax.legend(fontsize=7)
        ax.set_title("Predicted vs measured goodput")
        out.append(("Predicted vs measured", _svg(fig)))
    return out


def render_html(best: dict[str, Any], plots: list[tuple[str, str]],
                results: list[CandidateResult]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r.candidate.label())}</td><td>{r.status}</td>"
        f"<td>{r.predicted_goodput:.0f}</td><td>{r.goodput:.0f}</td>"
        f"<td>{(r.p99_at_goodput.value / 1000 if r.p99_at_goodput else float('nan')):.2f}</td>"
        f"<td>{html.escape(r.reason)}</td></tr>"
        for r in sorted(results, key=lambda r: -r.goodput))
    figures = "".join(f"<h2>{html.escape(t)}</h2>{svg}" for t, svg in plots)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>triton-ops tune: {html.escape(best['model'])}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
pre{{background:#f5f5f5;padding:1em}}</style></head><body>
<h1>tune: {html.escape(best['model'])}</h1>
<pre>{html.escape(json.dumps(best, indent=2))}</pre>
<h2>Candidates</h2>
<table><tr><th>config</th><th>status</th><th>predicted goodput</th><th>measured goodput</th>
<th>p99 at goodput (ms)</th><th>note</th></tr>{rows}</table>
{figures}
</body></html>
"""


def write_outputs(out_dir: Path, model: str, slo_us: float, outcome: SearchOutcome | None,
                  baseline: CandidateResult | None, profile: ServiceProfile | None,
                  skipped: list[CandidateResult], *, elapsed_s: float,
                  budget_s: float) -> dict[str, Any]:
    """Write best.json and report.html; return best.json's content."""
    best = best_summary(model, slo_us, outcome, baseline, profile, skipped,
                        elapsed_s=elapsed_s, budget_s=budget_s)
    best["out_dir"] = str(out_dir)
    atomic_write_text(out_dir / "best.json", json.dumps(best, indent=2) + "\n")
    table = None
    csv_path = out_dir / "measurements.csv"
    if csv_path.exists() and csv_path.stat().st_size > 0:
        import pandas as pd

        table = pd.read_csv(csv_path)
    results = list(outcome.results) if outcome else []
    atomic_write_text(out_dir / "report.html", render_html(best, _plots(table, results, slo_us),
                                                       results))
    return best
