"""The overload stage and the capacity plan in tune's outputs: summary lines, the policy
table and the plot of report.html (best.json's content in, text and HTML out)."""

from __future__ import annotations

import html
from typing import Any

# (label, text, tone): tune/report.py makes its SummaryLines from these.
Line = tuple[str, str, str]


def _ms(us: float | None) -> str:
    return "?" if us is None else f"{us / 1000:.0f} ms"


def _level(policy: dict[str, Any], level: float) -> dict[str, Any] | None:
    return next((f for f in policy.get("levels", []) if abs(f["level"] - level) < 1e-9), None)


def _chosen_entry(overload: dict[str, Any]) -> dict[str, Any] | None:
    chosen = (overload.get("chosen") or {}).get("policy")
    return next((p for p in overload.get("policies", []) if chosen is not None
                 and p["policy"]["timeout_us"] == chosen["timeout_us"]
                 and p["policy"]["max_queue_size"] == chosen["max_queue_size"]), None)


def _reference_entry(overload: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in overload.get("policies", [])
                 if p["policy"]["timeout_us"] == 0 and p["policy"]["max_queue_size"] == 0),
                None)


def overload_lines(best: dict[str, Any]) -> list[Line]:
    """What the overload stage found, in one or two lines (none when it was turned off)."""
    stage = best.get("overload_stage")
    if stage is None:
        return []
    overload = best.get("overload")
    if overload is None:
        return [("overload", f"not measured: {stage.get('not_run') or 'no result'}", "warn")]
    choice = overload.get("chosen")
    if choice is None:
        notes = "; ".join(overload.get("notes") or []) or "no choice could be made"
        return [("overload", notes, "warn")]
    chosen, reference = _chosen_entry(overload), _reference_entry(overload)
    loads = []
    for level in overload.get("levels", [])[1:]:
        mine = _level(chosen, level) if chosen else None
        ref = _level(reference, level) if reference else None
        if mine is None:
            continue
        loads.append(f"at {level:g}x {mine['within_slo_rps']:.0f} req/s within the SLO"
                     + (f" (no policy: {ref['within_slo_rps']:.0f})"
                        if ref is not None and choice["helps"] else ""))
    shed = _nominal_shed(chosen, overload["levels"][0]) if chosen and choice["helps"] else ""
    label = choice["policy"]["label"]
    head = f"use {label}" if choice["helps"] else "no queue policy helps: keep none"
    if overload.get("config_reason"):
        config = overload["config"]
        head += (f" on max_batch_size {config['max_batch_size']}, max_queue_delay "
                 f"{config['max_queue_delay_us']}us, {config['instance_count']} instance(s) "
                 f"(measured there: {overload['config_reason']})")
    why = "" if choice["helps"] else full_batch_note(best, overload)
    left_out = [p for p in overload["policies"] if p["status"] == "not measured"]
    unmeasured = (f"; {len(left_out)} of {len(overload['policies'])} policies not measured "
                  "for lack of time (a longer --budget measures them)" if left_out else "")
    return [("overload", f"{head}: offered " + ", ".join(loads) + shed + why + unmeasured,
             "good" if choice["helps"] else "warn")]


def _nominal_shed(chosen: dict[str, Any], level: float) -> str:
    """What the chosen policy rejected at the nominal level, with its confirmation."""
    from triton_ops.tune.overload.figures import PolicyResult

    counts = PolicyResult.from_dict(chosen).rejected_at(level)
    if counts is None:
        return ""
    rejected, requests = counts
    share = rejected / requests if requests else 0.0
    confirmed = " in two windows" if chosen.get("confirmation") else ""
    return (f"; {share:.2%} rejected at {level:g}x ({rejected} of {requests:,} "
            f"requests{confirmed})")


def full_batch_note(best: dict[str, Any], overload: dict[str, Any]) -> str:
    """Why no policy can help, when the profile shows it ('' otherwise): under overload every
    batch is full, and a request is answered within the SLO only after a queue wait shorter
    than the room a full batch leaves, which the queue wait at the nominal load outlasts.
    Names the profile's max_batch_sizes for which the stage's rule holds (`room_fits`)."""
    from dataclasses import replace

    from triton_ops.tune.batcher import Candidate, ServiceProfile, full_batch_us
    from triton_ops.tune.overload.config import room_fits
    from triton_ops.tune.overload.policy import room_us

    if not best.get("profile") or not overload.get("config"):
        return ""
    profile = ServiceProfile.from_dict(best["profile"])
    measured = Candidate.from_dict(overload["config"])
    slo_us = float(overload["slo_p99_us"])
    level = float(overload.get("levels", [0.8])[0])
    nominal = level * float(overload["goodput_rps"])
    if room_fits(measured, profile, slo_us, nominal):
        return ""
    full = full_batch_us(measured, profile)
    room = room_us(slo_us, full)
    fitting = [b for b in sorted(profile.batch_us) if room_fits(
        replace(measured, max_batch_size=b), profile, slo_us, nominal)]
    if room is None:
        why = (f"over the SLO of {_ms(slo_us)}: under overload batches fill, so no request is "
               "answered in time whatever the queue policy")
    else:
        why = (f"and leaves {_ms(room)} of the SLO of {_ms(slo_us)}: under overload batches "
               "fill, and a timeout short enough to answer in time rejects more than allowed "
               f"at {level:g}x the goodput, where the model predicts longer queue waits")
    sizes = ", ".join(map(str, fitting))
    alternative = (f"; max_batch_size {sizes} {'leaves' if len(fitting) == 1 else 'leave'} "
                   "the room (the stage's rule; measure with bench/overload.py --config)"
                   if fitting else "")
    return (f". A full batch of {measured.max_batch_size} takes {_ms(full)} (the profile) "
            f"{why}{alternative}")


def capacity_lines(best: dict[str, Any]) -> list[Line]:
    plan = best.get("capacity")
    if not plan:
        return []
    text = (f"{plan['replicas']} replicas for {plan['target_rps']:g} req/s "
            f"(N = {plan['needed']} at <= {plan['headroom']['utilisation_cap']:.0%} of "
            f"{plan['goodput_rps']:.0f} req/s each, + {plan['headroom']['spare']} spare); "
            f"HPA {plan['hpa_min']}..{plan['hpa_max']}")
    if plan.get("holds_at_2x_rps") is not None:
        text += (f"; offered 2x, one replica answers {plan['holds_at_2x_rps']:.0f} req/s "
                 "within the SLO")
    return [("capacity", text, "")]


def policy_table_html(best: dict[str, Any]) -> str:
    """The measured policies, one row per policy and load level."""
    overload = best.get("overload")
    if not overload:
        return ""
    chosen = _chosen_entry(overload)
    rows = []
    for policy in overload.get("policies", []):
        cls = ' class="chosen"' if policy is chosen else ""
        status = policy["status"] + (f": {policy['reason']}" if policy.get("reason") else "")
        levels = (policy.get("levels") or [None]) + ([policy["confirmation"]]
                                                     if policy.get("confirmation") else [])
        for i, f in enumerate(levels):
            name = html.escape(policy["policy"]["label"]) if i == 0 else ""
            cells = [name, html.escape(status) if i == 0 else ""]
            if f is None:
                cells += ["-"] * 6
            else:
                again = " again" if f is policy.get("confirmation") else ""
                cells += [f"{f['level']:g}x{again} ({f['offered_rps']:.0f})",
                          f"{f['within_slo_rps']:.0f}", f"{f['rejected_share']:.1%}",
                          f"{_ms(f['p99_answered']['p99_us'])} (n={f['p99_answered']['n']})",
                          f"{_ms(f['p99_rejected']['p99_us'])} (n={f['p99_rejected']['n']})"
                          if f["rejected"] else "-",
                          str(f["client_timeouts"])]
            rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    stage = best.get("overload_stage") or {}
    nominal = (f" ({stage['nominal_window_s']:.1f} s at {overload['levels'][0]:g}x)"
               if stage.get("nominal_window_s") else "")
    return (f"<h2>Past the knee: queue policies</h2><p>{html.escape(overload['rule'])}. "
            f"Measured for {stage.get('window_s', '?')} s per load{nominal} after a "
            f"{stage.get('warmup_s', '?')} s warm-up, in {stage.get('elapsed_s', 0):.0f} s "
            f"({stage.get('budget_share', 0):.0%} of the budget).</p>"
            "<table><tr><th>policy</th><th>status</th><th>load (offered req/s)</th>"
            "<th>within SLO (req/s)</th><th>rejected</th><th>p99 answered</th>"
            "<th>p99 rejections</th><th>client timeouts</th></tr>" + "".join(rows)
            + "</table>")


def overload_plot(best: dict[str, Any], plt: Any) -> tuple[str, Any] | None:
    """Requests answered within the SLO per second against the offered load, one line per
    policy; the figure (the caller renders it)."""
    overload = best.get("overload")
    if not overload or not overload.get("policies"):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = overload["goodput_rps"]
    for policy in overload["policies"]:
        levels = sorted(policy.get("levels") or [], key=lambda f: f["offered_rps"])
        if levels:
            top = max(top, *(f["within_slo_rps"] for f in levels))
            ax.plot([f["offered_rps"] for f in levels], [f["within_slo_rps"] for f in levels],
                    marker="o", label=policy["policy"]["label"])
    ax.axhline(overload["goodput_rps"], color="grey", linestyle=":", label="tune's goodput")
    ax.set_xlabel("offered load (req/s)")
    ax.set_ylabel("answered within the SLO (req/s)")
    ax.set_ylim(0, 1.1 * top)  # the goodput line stays in view
    ax.legend(fontsize=7)
    ax.set_title("Within-SLO answers vs offered load, per queue policy")
    return "Within-SLO answers vs offered load", fig
