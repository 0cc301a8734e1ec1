"""Reconnect pacing and outage logging for the broker and the result backends.

While a server is unreachable, attempts are spaced by exponential backoff with
jitter: fast at first (a restart takes a second or two), then capped, and
never in step across workers. Each failed attempt logs one WARNING line with
its cause and no traceback; once an outage outlasts ``error_after`` seconds,
one ERROR with the traceback says so (once per outage). Counters are read by
the metrics endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .logging import get_logger, redact_text


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delays between attempts: ``initial`` doubling up to ``maximum`` seconds."""

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    #: An outage longer than this (seconds) is logged once as an ERROR.
    error_after: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> BackoffPolicy:
        """The policy of ``worker_reconnect_*`` settings."""
        return cls(initial=settings.worker_reconnect_min_interval,
                   maximum=settings.worker_reconnect_max_interval,
                   error_after=settings.worker_outage_error_after)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """The pause after failed attempt ``attempt`` (0-based).

        "Equal jitter": uniform in [b/2, b] with b = initial * factor**attempt,
        capped; so each delay is at least the previous one until the cap, and
        workers that lost the server together do not retry together.
        """
        ceiling = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return ceiling / 2 + rng() * ceiling / 2

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """The endless sequence of delays."""
        attempt = 0
        while True:
            yield self.delay(attempt, rng)
            attempt += 1


class Outage:
    """One dependency's reconnect bookkeeping: backoff, logs and counters.

    ``failed(exc)`` after each failed attempt returns how long to wait;
    ``recovered()`` after a success ends the outage.
    """

    def __init__(self, what: str, target: str, policy: BackoffPolicy | None = None,
                 logger: Any = None, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        self.what = what
        self.target = target
        self.policy = policy or BackoffPolicy()
        self.log = logger if logger is not None else get_logger("outage")
        self.clock = clock
        self.rng = rng
        #: Failed attempts, all outages together.
        self.failures = 0
        #: Outages that ended with a successful attempt.
        self.recoveries = 0
        self.since: float | None = None
        self._attempt = self._level = 0
        self._escalated = False

    @property
    def down(self) -> bool:
        """Between a failed attempt and the next success."""
        return self.since is not None

    def lost(self, exc: BaseException | None) -> None:
        """A working connection dropped: the outage starts (one WARNING)."""
        if self.since is None:
            self.since = self.clock()
            self._attempt = self._level = 0
            self._escalated = False
        cause = (redact_text(str(exc)) or type(exc).__name__) if exc is not None else None
        self.log.warning(f"{self.what} connection lost; reconnecting", target=self.target,
                         error=cause)

    def failed(self, exc: BaseException, pause: bool = True) -> float:
        """Count and log one failed attempt; return the seconds to wait before the next.

        ``pause=False``: the next attempt goes elsewhere (another node of a
        failover list) at once, and the backoff does not grow.
        """
        now = self.clock()
        if self.since is None:
            self.since = now
            self._attempt = self._level = 0
            self._escalated = False
        delay = self.policy.delay(self._level, self.rng) if pause else 0.0
        self._level += pause
        self._attempt += 1
        self.failures += 1
        down_for = now - self.since
        cause = redact_text(str(exc)) or type(exc).__name__
        self.log.warning(f"{self.what} unreachable, retrying", target=self.target,
                         error=cause, error_type=type(exc).__name__, attempt=self._attempt,
                         down_for=round(down_for, 3), retry_in=round(delay, 3))
        if not self._escalated and down_for >= self.policy.error_after:
            self._escalated = True
            self.log.error(f"{self.what} down for over {self.policy.error_after:g}s",
                           target=self.target, attempts=self._attempt, exc_info=exc)
        return delay

    def recovered(self) -> bool:
        """End the outage (if any): log how long it lasted. True if there was one."""
        if self.since is None:
            return False
        down_for = self.clock() - self.since
        self.since = None
        self.recoveries += 1
        self.log.warning(f"{self.what} reachable again", target=self.target,
                         attempts=self._attempt, down_for=round(down_for, 3))
        return True
