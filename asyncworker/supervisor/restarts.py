"""When a dead child is started again, and when its deaths make a crash loop.

Each death pauses the child's restart by :class:`~asyncworker.backoff.BackoffPolicy`:
0.5–1 s at first, doubling (with jitter) up to a minute, so a child that cannot
start costs a few processes a minute instead of a core. A child that ran for
``stable_after`` seconds before it died starts over at the short pause: one
death after hours of work is not a loop. ``threshold`` deaths within
``window`` seconds are a crash loop: reported once, as an ERROR, when it
starts, while the pauses keep growing; it lasts until the child runs for
``stable_after`` seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..backoff import BackoffPolicy

#: The pause after a child's death: 1 s, doubling up to 60 s.
RESTART_BACKOFF = BackoffPolicy(initial=1.0, maximum=60.0)


@dataclass(frozen=True, slots=True)
class Restart:
    """What to do after one death."""

    #: Seconds to wait before starting the child again.
    delay: float
    #: Deaths within the window, this one included.
    recent_deaths: int
    #: The deaths make a crash loop.
    crash_loop: bool
    #: This death started the crash loop (report it).
    crash_loop_started: bool


class RestartTracker:
    """One child slot's deaths: the pause before each restart and crash-loop detection."""

    def __init__(self, policy: BackoffPolicy = RESTART_BACKOFF, *, threshold: int = 3,
                 window: float = 60.0, stable_after: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self.threshold = threshold
        self.window = window
        self.stable_after = stable_after
        self.clock = clock
        self.rng = rng
        self.deaths: deque[float] = deque()
        self.attempt = 0
        self.looping = False

    def died(self, uptime: float) -> Restart:
        """Record a death after ``uptime`` seconds of running; say when to restart."""
        now = self.clock()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] <= now - self.window:
            self.deaths.popleft()
        if uptime >= self.stable_after:
            self.attempt = 0
            self.looping = False
        delay = (self.policy.delay(self.attempt) if self.rng is None
                 else self.policy.delay(self.attempt, self.rng))
        self.attempt += 1
        looping = self.looping or len(self.deaths) >= self.threshold
        started = looping and not self.looping
        self.looping = looping
        return Restart(delay, len(self.deaths), looping, started)
