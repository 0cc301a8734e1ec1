"""``broker_url`` as Celery reads it: one URL, or a failover list, tried in turn.

Celery (kombu) accepts several broker URLs, joined by ``;`` or given as a list,
for the nodes of one RabbitMQ cluster; it starts with the first and moves to
the next whenever an attempt fails or the connection drops, pausing only once
every URL has failed in a row (``broker_failover_strategy``: ``round-robin``,
or ``shuffle``). Everything that connects to the broker (the worker, the
producer, beat, ``dlq``, ``ping``, ``inspect stats``) reads the setting through
this module, so the list is parsed, ordered and redacted one way.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..exceptions import ImproperlyConfigured
from ..logging import redact_url

STRATEGIES = ("round-robin", "shuffle")


def split(value: str | Sequence[str]) -> list[str]:
    """The URLs of ``broker_url``: a ``;``-joined string or a list (of such strings)."""
    parts = [value] if isinstance(value, str) else list(value)
    urls = [url.strip() for part in parts for url in part.split(";") if url.strip()]
    if not urls:
        raise ImproperlyConfigured("broker_url is empty")
    return urls


def redact(value: str | Sequence[str]) -> str:
    """``broker_url`` for a log line: every URL's password hidden, ``;``-joined."""
    return ";".join(redact_url(url) for url in split(value))


class Failover:
    """Which URL to connect to now, and whether it is time to pause.

    ``round-robin`` starts with the first URL and goes down the list, as Celery
    does. ``shuffle`` starts with a random one and tries every URL once per round
    in a new random order (Celery's draws each next URL at random, and can try a
    dead node twice in a row); clients started together then spread over the
    nodes instead of all landing on the first.
    """

    def __init__(self, urls: Sequence[str], strategy: str = "round-robin",
                 rng: random.Random | None = None) -> None:
        if strategy not in STRATEGIES:
            raise ImproperlyConfigured(
                f"broker_failover_strategy must be one of {', '.join(STRATEGIES)}, "
                f"not {strategy!r}")
        if not urls:
            raise ImproperlyConfigured("broker_url is empty")
        self.urls = list(urls)
        self.strategy = strategy
        self._rng = rng or random.Random()
        self._order = self._new_round(avoid=None)
        self._position = 0
        #: Attempts failed in a row since the last connection (all URLs together).
        self.failures = 0

    @property
    def current(self) -> str:
        """The URL to connect to (or connected to) now."""
        return self._order[self._position]

    def _new_round(self, avoid: str | None) -> list[str]:
        if self.strategy == "round-robin":
            return list(self.urls)
        order = list(self.urls)
        self._rng.shuffle(order)
        if len(order) > 1 and order[0] == avoid:
            # Not the URL that just failed again, straight away.
            order.append(order.pop(0))
        return order

    def advance(self) -> str:
        """Move to the next URL (after a dropped connection); return it."""
        self._position += 1
        if self._position == len(self._order):
            self._order = self._new_round(avoid=self._order[-1])
            self._position = 0
        return self.current

    def failed(self) -> bool:
        """An attempt on ``current`` failed: move on. True once every URL has failed
        in a row since the last success (then the caller backs off)."""
        self.failures += 1
        self.advance()
        return self.failures % len(self.urls) == 0

    def succeeded(self) -> None:
        """Connected to ``current``: the next failure starts a new round."""
        self.failures = 0
