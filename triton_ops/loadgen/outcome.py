"""What became of one request: answered, rejected by Triton's queue policy, timed out, failed.

Triton answers a request its dynamic batcher refuses with an error, not a result: status
UNAVAILABLE and "Exceeds maximum queue size" when the queue of the request's priority level
is full at enqueue (`max_queue_size`), "Request timeout expired" when its queue timeout ran
out and the policy's timeout_action is REJECT (core: src/scheduler_utils.cc,
src/dynamic_batch_scheduler.cc). Those are load shedding working as configured; any other
error is a failure. A request the client gave up on (its deadline) was never answered.
"""

from __future__ import annotations

from enum import IntEnum

QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"
QUEUE_TIMEOUT_MESSAGE = "Request timeout expired"
UNAVAILABLE = "UNAVAILABLE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


class Outcome(IntEnum):
    """One request's outcome (stored as a small integer per sample)."""

    OK = 0
    REJECTED_QUEUE_FULL = 1  # max_queue_size: refused at enqueue
    REJECTED_TIMEOUT = 2  # queue policy timeout with timeout_action REJECT
    CLIENT_TIMEOUT = 3  # the client's deadline passed first
    ERROR = 4  # anything else: a failure, not shedding

    @property
    def rejected(self) -> bool:
        return self in (Outcome.REJECTED_QUEUE_FULL, Outcome.REJECTED_TIMEOUT)


REJECTED = (int(Outcome.REJECTED_QUEUE_FULL), int(Outcome.REJECTED_TIMEOUT))


def classify_error(status: str | None, message: str | None) -> Outcome:
    """The outcome of a failed request, from the gRPC status ("StatusCode.UNAVAILABLE" or
    "UNAVAILABLE") and the message of the error the client raised."""
    code = (status or "").rsplit(".", 1)[-1].upper()
    text = message or ""
    if code == UNAVAILABLE and QUEUE_FULL_MESSAGE in text:
        return Outcome.REJECTED_QUEUE_FULL
    if code == UNAVAILABLE and QUEUE_TIMEOUT_MESSAGE in text:
        return Outcome.REJECTED_TIMEOUT
    if code == DEADLINE_EXCEEDED:
        return Outcome.CLIENT_TIMEOUT
    return Outcome.ERROR


def outcome_of(exc: Exception) -> Outcome:
    """The outcome of a request whose client call raised `exc`: Triton's errors by their
    status and message, anything else (a broken connection, a bug) a failure."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return classify_error(exc.status(), exc.message())
    return Outcome.ERROR
