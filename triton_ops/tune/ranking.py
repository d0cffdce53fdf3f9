"""Which candidates to measure, in which order (pure logic over predictions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from triton_ops.tune.batcher import Candidate
from triton_ops.tune.results import CandidateResult


def candidate_space(max_batch_sizes: Iterable[int], delays_us: Iterable[int],
                    instance_counts: Iterable[int], *,
                    preferred: bool = False) -> list[Candidate]:
    """The cross product, without duplicates that cannot differ (delay with max_batch 0/1).

    With `preferred`, each batching candidate also comes with preferred_batch_sizes set to
    the powers of two up to its max (lets the batcher ship a full power-of-two batch at once).
    """
    out: set[Candidate] = set()
    for mbs in max_batch_sizes:
        for delay in delays_us:
            for inst in instance_counts:
                # A batcher that cannot batch more than one request gains nothing by waiting.
                d = 0 if mbs <= 1 else int(delay)
                out.add(Candidate(int(mbs), d, int(inst)))
                if preferred and mbs > 2:
                    pows = tuple(2**k for k in range(1, int(math.log2(mbs)) + 1) if 2**k <= mbs)
                    if pows and pows[-1] != mbs:
                        out.add(Candidate(int(mbs), d, int(inst), pows))
    return sorted(out)


def prune_by_memory(space: Sequence[Candidate], *, per_instance_bytes: Callable[[int], int] | None,
                    available_bytes: int | None) -> tuple[list[Candidate], list[CandidateResult]]:
    """Split `space` into candidates whose memory envelope fits and those that do not."""
    if per_instance_bytes is None or available_bytes is None:
        return list(space), []
    fits: list[Candidate] = []
    skipped: list[CandidateResult] = []
    for c in space:
        need = per_instance_bytes(c.max_batch_size) * c.instance_count
        if need <= available_bytes:
            fits.append(c)
        else:
            skipped.append(CandidateResult(
                c, 0.0, status="skipped",
                reason=f"needs {need} bytes of GPU memory, {available_bytes} available"))
    return fits, skipped


def rank_candidates(space: Sequence[Candidate], predict: Callable[[Candidate], float], *,
                    max_twin_delay_us: float = 0.0, twin_tolerance: float = 0.02,
                    ) -> list[tuple[Candidate, float]]:
    """Candidates by predicted goodput, best first.

    Among candidates the model cannot tell apart (same batch size, instances and preferred
    sizes, predictions within `twin_tolerance`, the resolution of `predict_goodput`), one
    is kept: the longest queue delay up to `max_twin_delay_us`, else the shortest. The model
    charges every execution only its measured compute time; a longer delay forms larger
    batches, i.e. fewer executions and less of the work around each (scheduling, the
    backend's hand-over, the machine's CPU), which the model cannot see, at a latency cost
    of at most the delay. With `max_twin_delay_us` 0 the shortest delay is kept.
    """

    def preference(c: Candidate) -> tuple[int, int]:  # lower is preferred among twins
        d = c.max_queue_delay_us
        return (0, -d) if d <= max_twin_delay_us else (1, d)

    predicted = [(c, predict(c)) for c in space]
    predicted.sort(key=lambda cp: (-cp[1], preference(cp[0]), cp[0].instance_count,
                                   cp[0].max_batch_size, len(cp[0].preferred_batch_sizes)))
    kept: list[tuple[Candidate, float]] = []
    for c, g in predicted:
        for i, (k, kg) in enumerate(kept):
            if (k.max_batch_size == c.max_batch_size and k.instance_count == c.instance_count
                    and k.preferred_batch_sizes == c.preferred_batch_sizes
                    and abs(kg - g) <= twin_tolerance * max(kg, g, 1e-9)):
                if preference(c) < preference(k):
                    kept[i] = (c, kg)  # the preferred twin takes the place of the group
                break
        else:
            kept.append((c, g))
    return kept
