"""Benchmark: one batching config served with queue policies, at 0.8x, 2x and 3x a goodput.

Per policy and offered load it prints the offered rate, the requests answered within the
SLO per second and their ratio to the goodput, the p99 of the answered ones, the rejected
share and the p99 of the rejections, then the targets, measured in this one run:
  2x      within-SLO answers/s >= 0.8 x goodput
  3x      within-SLO answers/s >= 0.5 x goodput
  0.8x    at most 0.1% rejected
  reject  rejections answered within the SLO (p99), at every load
and the policy the overload stage's rule chooses from these figures.

The goodput comes from --goodput or from a tune run's best.json (--best), which also gives
the config and, with --policies chosen, the policy tune chose (measured against no policy)
on the config tune measured it on, at multiples of that config's goodput (the stage's
levels). The 0.8x level lasts long enough for 1000 requests, as in
the overload stage (one rejection is 0.1%), or for --nominal-requests: the rejected share is
then measured more finely than the 0.1% limit.

Run: .venv/bin/python bench/overload.py --envelope ENVELOPE [--repository REPO]
         (--goodput RPS [--config MBS,DELAY_US,INSTANCES] | --best DIR/best.json)
         [--policies space|chosen|none,timeout:100ms,queue:50,timeout:100ms+queue:50]
         [--window 4] [--nominal-requests 1000] [--url HOST:PORT] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_2X, TARGET_3X, MAX_NOMINAL_REJECTED = 0.8, 0.5, 0.001


def parse_policies(text: str) -> list[Any]:
    """"none,timeout:100ms,queue:50,timeout:100ms+queue:50" -> policies (no policy first)."""
    from triton_ops.envelope.units import parse_duration_us
    from triton_ops.tune.overload import OverloadPolicy

    policies = [OverloadPolicy()]
    for item in filter(None, (p.strip() for p in text.split(","))):
        timeout, size = 0, 0
        for part in item.split("+"):
            key, _, value = part.partition(":")
            if key == "timeout":
                timeout = parse_duration_us(value)
            elif key == "queue":
                size = int(value)
            elif key != "none":
                raise SystemExit(f"--policies: {part!r} is not none, timeout:<duration> or "
                                 "queue:<size>")
        policy = OverloadPolicy(timeout, size)
        if policy not in policies:
            policies.append(policy)
    return policies


def targets(result: Any, goodput: float, slo_us: float) -> dict[str, bool | None]:
    """The issue's targets for one policy (None: not measured)."""
    at = {level: result.at(level) for level in (0.8, 2.0, 3.0)}
    rejections = [f.rejections_within(slo_us) for f in result.levels]
    return {
        "2x >= 0.8 goodput": None if at[2.0] is None
        else at[2.0].within_slo_rps >= TARGET_2X * goodput,
        "3x >= 0.5 goodput": None if at[3.0] is None
        else at[3.0].within_slo_rps >= TARGET_3X * goodput,
        "0.8x <= 0.1% rejected": None if at[0.8] is None
        else at[0.8].rejected_share <= MAX_NOMINAL_REJECTED,
        "rejections within SLO": all(r is not False for r in rejections),
    }


def progress(event: Any) -> None:
    from triton_ops.tune.overload.measure import LevelMeasured, PolicyDone, PolicyLoading

    if isinstance(event, PolicyLoading):
        print(f"{event.policy.label()}:", file=sys.stderr, flush=True)
    elif isinstance(event, LevelMeasured):
        f = event.figures
        print(f"  {f.level:g}x: {f.offered_rps:.0f} offered/s, {f.within_slo_rps:.0f}/s within "
              f"the SLO, {f.rejected_share:.1%} rejected", file=sys.stderr, flush=True)
    elif isinstance(event, PolicyDone) and event.result.reason:
        print(f"  {event.result.status}: {event.result.reason}", file=sys.stderr, flush=True)


def ms(est: Any) -> str:
    """A p99 in ms with its sample count."""
    return f"{est.value / 1000:.0f} ({est.n})" if est.n else "-"


def print_results(overload: Any, goodput: float, slo_us: float) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # A pipe gets 120 columns (rich would take 80); a terminal its own width.
    console = Console(width=shutil.get_terminal_size((120, 24)).columns)
    chosen = overload.choice.policy if overload.choice else None
    table = Table(title=f"goodput {goodput:.0f} req/s, SLO p99 {slo_us / 1000:g} ms; "
                  "p99 in ms (samples); * chosen", box=box.SIMPLE_HEAD)
    table.add_column("policy", no_wrap=True)
    for column in ("load", "offered\n/s", "in SLO\n/s", "x\ngoodput", "p99\nanswered",
                   "rejected", "p99\nrejected", "client\ntimeouts", "late\nsends"):
        table.add_column(column, justify="right", no_wrap=True)
    for result in overload.results:
        name = result.policy.key + (" *" if result.policy == chosen else "")
        for i, f in enumerate(result.levels):
            table.add_row(name if i == 0 else "", f"{f.level:g}x", f"{f.offered_rps:.0f}",
                          f"{f.within_slo_rps:.0f}", f"{f.within_slo_rps / goodput:.2f}",
                          ms(f.p99_answered), f"{f.rejected_share:.1%}", ms(f.p99_rejected),
                          f"{f.client_timeouts}", f"{f.late_fraction:.1%}")
        if result.status != "measured" or result.reason:
            table.add_row("", "", f"[yellow]{result.status}: {result.reason}[/]")
    console.print(table)
    checks = Table(title="targets", box=box.SIMPLE_HEAD)
    checks.add_column("policy", no_wrap=True)
    names = list(targets(overload.results[0], goodput, slo_us))
    for name in names:
        checks.add_column(name, justify="center", no_wrap=True)
    for result in overload.results:
        marks = targets(result, goodput, slo_us)
        checks.add_row(result.policy.key, *("n/a" if marks[n] is None else
                                            "pass" if marks[n] else "FAIL" for n in names))
    console.print(checks)
    if overload.choice:
        console.print(f"choice: {overload.choice.reason}")
    for note in overload.notes:
        console.print(f"note: {note}")


def main() -> int:
    from triton_ops.tune.overload.measure import MIN_NOMINAL_REQUESTS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envelope", type=Path, required=True)
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--goodput", type=float, help="req/s the config holds under the SLO")
    parser.add_argument("--config", metavar="MBS,DELAY_US,INSTANCES",
                        help="batching config (default: the envelope's)")
    parser.add_argument("--best", type=Path, help="a tune run's best.json: goodput and config")
    parser.add_argument("--policies", default="space",
                        help="space (the overload stage's), chosen (from --best), or a list")
    parser.add_argument("--window", type=float, default=4.0, help="seconds per load level")
    parser.add_argument("--nominal-requests", type=int, default=MIN_NOMINAL_REQUESTS,
                        help="requests the 0.8x level lasts for (at least)")
    parser.add_argument("--url", help="a running Triton's gRPC address (default: embedded)")
    parser.add_argument("--out", type=Path, help="write the results (best.json's form) here")
    args = parser.parse_args()

    from triton_ops.envelope.loader import require_envelope
    from triton_ops.server.endpoints import open_server
    from triton_ops.tune.batcher import Candidate
    from triton_ops.tune.overload import OverloadPolicy, policy_space
    from triton_ops.tune.overload.measure import (
        OverloadSettings,
        measure_overload,
        nominal_window_s,
    )

    envelope = require_envelope(args.envelope)
    slo_us = float(envelope.slo.p99_latency) if envelope.slo else 0.0
    best = json.loads(args.best.read_text()) if args.best else {}
    goodput = args.goodput or float(best.get("goodput") or 0)
    if not args.goodput and args.policies == "chosen" and best.get("overload"):
        # The stage's levels: multiples of the goodput of the config it measured.
        goodput = float(best["overload"]["goodput_rps"])
    if goodput <= 0 or slo_us <= 0:
        parser.error("give --goodput (or --best with a goodput) and an envelope with an SLO")
    if args.config:
        mbs, delay, count = (int(x) for x in args.config.split(","))
        candidate = Candidate(mbs, delay, count)
    elif args.policies == "chosen" and (best.get("overload") or {}).get("config"):
        candidate = Candidate.from_dict(best["overload"]["config"])  # where it was measured
    elif best.get("chosen"):
        candidate = Candidate.from_dict(best["chosen"])
    else:
        dyn = envelope.batching.dynamic
        candidate = Candidate(envelope.max_batch_size, dyn.max_queue_delay if dyn else 0,
                              sum(g.count for g in envelope.instances) or 1)
    if args.policies == "space":
        policies = policy_space(goodput, slo_us, max_batch_size=candidate.max_batch_size,
                                max_queue_delay_us=candidate.max_queue_delay_us)
    elif args.policies == "chosen":
        chosen = ((best.get("overload") or {}).get("chosen") or {}).get("policy")
        if chosen is None:
            parser.error("--policies chosen needs --best with an 'overload' choice")
        policies = list(dict.fromkeys([OverloadPolicy(), OverloadPolicy.from_dict(chosen)]))
    else:
        policies = parse_policies(args.policies)
    print(f"{envelope.name}: {candidate.label()}, goodput {goodput:.0f} req/s, "
          f"{len(policies)} policies x 3 loads", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        repository = args.repository
        if not args.url:  # a private copy: models may write next to themselves (a lock file)
            repository = Path(shutil.copytree(args.repository, Path(tmp) / "repo"))
        with open_server(args.url, repository, [envelope.name]) as ep:
            overload = measure_overload(
                ep.grpc_url, envelope.name, envelope, candidate, goodput, slo_us,
                policies=policies,
                settings=OverloadSettings(
                    window_s=args.window, skip_disqualified=False,
                    confirm_requests=0,  # the 0.8x level already lasts --nominal-requests
                    nominal_window_s=nominal_window_s(args.window, 0.8 * goodput,
                                                      min_requests=args.nominal_requests)),
                on_event=progress)
    print_results(overload, goodput, slo_us)
    if args.out:
        args.out.write_text(json.dumps(overload.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
