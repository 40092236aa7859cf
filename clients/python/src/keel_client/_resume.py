"""The bookkeeping behind :meth:`Session.events`' reconnects (no I/O here)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

from ._errors import KeelError

# Codes after which reconnecting may succeed. Transport failures (the server
# went away mid-stream) arrive as UNAVAILABLE, or as INTERNAL / UNKNOWN /
# CANCELLED without a keel.v1.ErrorInfo (errors Keel itself makes carry one).
_ALWAYS_RETRY = {grpc.StatusCode.UNAVAILABLE}
_TRANSPORT_CODES = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def should_reconnect(err: KeelError) -> bool:
    """Whether an event stream that failed with ``err`` is worth reopening."""
    if err.code in _ALWAYS_RETRY or err.retryable:
        return True
    return err.code in _TRANSPORT_CODES and err.error_class is None


@dataclass
class Cursor:
    """Where a stream is: the offset of the last event delivered.

    ``accept`` decides whether an event is new (offsets only grow, so a
    replayed one is dropped); a gap moves the cursor to just before the
    oldest retained event.
    """

    last_offset: int = 0

    def accept(self, offset: int) -> bool:
        if offset <= self.last_offset:
            return False
        self.last_offset = offset
        return True

    def gap(self, first_retained_offset: int) -> None:
        self.last_offset = max(self.last_offset, first_retained_offset - 1)


# A stream that got its headers and then stayed up this long (seconds)
# before failing was a working connection: its failure starts a new outage
# with a fresh time budget (an idle follow of a quiet session receives
# nothing for long stretches, so messages alone cannot show it was up).
STREAM_UP = 2.0
# At most this many such fresh budgets in a row without a message delivered
# in between, so a server that keeps failing a while after its headers
# cannot keep the iterator retrying forever.
MAX_IDLE_RESETS = 10


@dataclass
class Backoff:
    """Exponential backoff with jitter, and a budget: ``next_delay`` returns
    ``None`` once ``give_up_after`` seconds have passed since the first
    failure without progress in between (``progress`` resets it, and so
    does ``stream_was_up`` for a stream that was up a while)."""

    give_up_after: float = 60.0
    initial: float = 0.1
    maximum: float = 2.0
    _attempt: int = 0
    _since: float | None = None
    _idle_resets: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def attempts(self) -> int:
        """Retries since the outage began (1 after the first ``next_delay``)."""
        return self._attempt

    def progress(self) -> None:
        """A message got through: the connection works."""
        self._attempt = 0
        self._since = None
        self._idle_resets = 0

    def stream_was_up(self, seconds: float) -> None:
        """A stream that had received its headers ended or failed after
        ``seconds``: when that is at least ``STREAM_UP``, the next failure
        starts a new outage (at most ``MAX_IDLE_RESETS`` times in a row
        without ``progress``)."""
        if seconds >= STREAM_UP and self._idle_resets < MAX_IDLE_RESETS:
            self._idle_resets += 1
            self._attempt = 0
            self._since = None

    def failing_for(self, now: float) -> float:
        return 0.0 if self._since is None else now - self._since

    def next_delay(self, now: float) -> float | None:
        if self._since is None:
            self._since = now
        remaining = self._since + self.give_up_after - now
        if remaining <= 0:
            return None
        delay: float = min(self.maximum, self.initial * 2.0**self._attempt)
        self._attempt += 1
        delay *= 0.5 + self._rng.random() / 2
        return min(delay, remaining)


@dataclass(frozen=True)
class ReconnectInfo:
    """What ``Session.events(on_reconnect=...)`` is told before each
    reconnection attempt."""

    attempt: int
    """1 for the first retry after a failure."""
    after_offset: int
    """The offset the next stream resumes after."""
    error: KeelError
    """Why the stream ended (UNAVAILABLE "the event stream ended early"
    for a following stream that ended before the session did)."""
    delay: float
    """Seconds it waits before trying."""
