"""Where kombu's Redis transport keeps things: key names, bindings, fair order.

Everything a Celery client or worker on ``redis://`` reads or writes has a
name derived from the transport options, and both sides must derive the same
one: a queue is a list per priority step (``celery``, ``celery\\x06\\x163``,
...), an exchange's bindings a set ``_kombu.binding.<exchange>`` of
``routing_key<sep>pattern<sep>queue`` members, a fanout exchange a PUB/SUB
channel ``/<db>.<exchange>[/<routing key>]``, and ``global_keyprefix`` goes
before every key and channel. Pure functions and small classes, no I/O.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: kombu's defaults.
PRIORITY_STEPS = (0, 3, 6, 9)
SEP = "\x06\x16"
MIN_PRIORITY, MAX_PRIORITY = 0, 9


@dataclass(frozen=True, slots=True)
class Keys:
    """Key and channel names for one Redis database and set of transport options."""

    prefix: str = ""
    sep: str = SEP
    steps: tuple[int, ...] = PRIORITY_STEPS
    #: The fanout channel prefix, already formatted (``/5.``), or "" when disabled.
    fanout_prefix: str = "/0."
    fanout_patterns: bool = True

    @classmethod
    def build(cls, db: int, prefix: str = "", sep: str = SEP,
              steps: Sequence[int] = PRIORITY_STEPS, fanout_prefix: bool | str = True,
              fanout_patterns: bool = True) -> Keys:
        """As kombu derives them from the options (``fanout_prefix`` True: ``/{db}.``)."""
        if fanout_prefix is True:
            fanout = f"/{db}."
        elif isinstance(fanout_prefix, str) and fanout_prefix:
            fanout = fanout_prefix
        else:
            fanout = ""
        return cls(prefix, sep, tuple(sorted(steps)), fanout, fanout_patterns)

    # -- queues ----------------------------------------------------------------
    def step(self, priority: int | None) -> int:
        """The priority step a message of ``priority`` is filed under."""
        try:
            value = max(min(int(priority or 0), MAX_PRIORITY), MIN_PRIORITY)
        except (TypeError, ValueError):
            value = 0
        return self.steps[max(bisect.bisect(self.steps, value) - 1, 0)]

    def list_key(self, queue: str, priority: int | None = 0) -> str:
        """The list holding ``queue``'s messages of ``priority``."""
        step = self.step(priority)
        return f"{self.prefix}{queue}{self.sep}{step}" if step else f"{self.prefix}{queue}"

    def lists(self, queue: str) -> list[str]:
        """Every list of ``queue``, highest priority (lowest number) first."""
        return [self.list_key(queue, step) for step in self.steps]

    def fetch_order(self, queues: Iterable[str]) -> list[str]:
        """The lists to pop from, in kombu's BRPOP order: by step, then by queue."""
        queues = list(queues)
        return [self.list_key(queue, step) for step in self.steps for queue in queues]

    def queue_of(self, key: str) -> str:
        """The queue a list key belongs to."""
        name = key[len(self.prefix):] if self.prefix and key.startswith(self.prefix) else key
        return name.rsplit(self.sep, 1)[0]

    # -- bindings --------------------------------------------------------------
    def binding(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding.{exchange}"

    def binding_permanent(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding_permanent.{exchange}"

    @property
    def binding_deadlines(self) -> str:
        return f"{self.prefix}_kombu.binding_deadlines"

    def member(self, routing_key: str, pattern: str | None, queue: str) -> str:
        return self.sep.join([routing_key or "", pattern or "", queue or ""])

    def parse_member(self, member: bytes | str) -> tuple[str, str, str] | None:
        text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
        parts = text.split(self.sep)
        if len(parts) != 3:
            return None  # not a binding kombu would write: ignored, as kombu would fail
        return parts[0], parts[1], parts[2]

    # -- acks ------------------------------------------------------------------
    @property
    def unacked(self) -> str:
        return f"{self.prefix}unacked"

    @property
    def unacked_index(self) -> str:
        return f"{self.prefix}unacked_index"

    @property
    def unacked_mutex(self) -> str:
        return f"{self.prefix}unacked_mutex"

    # -- fanout ----------------------------------------------------------------
    def topic(self, exchange: str, routing_key: str = "") -> str:
        """The PUB/SUB channel of a fanout publish (and of a subscription's pattern)."""
        if routing_key and self.fanout_patterns:
            return f"{self.prefix}{self.fanout_prefix}{exchange}/{routing_key}"
        return f"{self.prefix}{self.fanout_prefix}{exchange}"

    def exchange_of_channel(self, channel: str) -> str:
        """The exchange a PUB/SUB message was published to, from its channel."""
        if self.prefix and channel.startswith(self.prefix):
            channel = channel[len(self.prefix):]
        if channel.startswith("/"):
            channel = channel.partition(".")[2]
        return channel.split("/", 1)[0]


_WILDCARDS = {"*": r"[^\.]+", "#": r".*?"}


def topic_pattern(routing_key: str) -> str:
    """The regular expression kombu stores for a topic binding (same text)."""
    def escape(word: str) -> str:
        return "".join(c if c.isalnum() or c in ".#*" else ("\\000" if c == "\0" else "\\" + c)
                       for c in word)
    body = r"\.".join(_WILDCARDS.get(word, word) for word in escape(routing_key).split("."))
    return f"^{body}$"


_COMPILED: dict[str, re.Pattern[str] | None] = {}


def _match(pattern: str, routing_key: str) -> bool:
    if pattern not in _COMPILED:
        try:
            _COMPILED[pattern] = re.compile(pattern)
        except re.error:
            _COMPILED[pattern] = None  # a binding we cannot read routes nothing
    compiled = _COMPILED[pattern]
    return compiled is not None and compiled.match(routing_key) is not None


def route(kind: str, table: Iterable[tuple[str, str, str]], routing_key: str) -> list[str]:
    """The queues a message with ``routing_key`` reaches through an exchange of
    type ``kind`` whose bindings are ``table`` (kombu's exchange semantics)."""
    found: list[str] = []
    for key, pattern, queue in table:
        if kind == "fanout":
            hit = True
        elif kind == "topic":
            hit = _match(pattern or topic_pattern(key), routing_key)
        else:
            hit = key == routing_key
        if hit and queue and queue not in found:
            found.append(queue)
    return found


class QueueCycle:
    """The order queues are polled in (``queue_order_strategy``), as kombu's cycles.

    ``round_robin``: the queue a message just came from goes to the back, so a
    busy queue cannot starve the others; ``priority``: the order given;
    ``sorted``: alphabetical.
    """

    STRATEGIES = ("round_robin", "priority", "sorted")

    def __init__(self, strategy: str = "round_robin") -> None:
        if strategy not in self.STRATEGIES:
            raise ValueError(f"queue_order_strategy must be one of {self.STRATEGIES}")
        self.strategy = strategy
        self.items: list[str] = []

    def add(self, queue: str) -> None:
        if queue not in self.items:
            self.items.append(queue)

    def discard(self, queue: str) -> None:
        if queue in self.items:
            self.items.remove(queue)

    def order(self) -> list[str]:
        return sorted(self.items) if self.strategy == "sorted" else list(self.items)

    def rotate(self, used: str) -> None:
        if self.strategy == "round_robin" and used in self.items:
            self.items.remove(used)
            self.items.append(used)
