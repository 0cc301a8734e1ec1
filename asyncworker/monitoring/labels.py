"""Label values with bounded cardinality.

A label value taken from a message (a task name, an exception type, a
dead-letter reason) could otherwise grow a new time series per bad message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

#: What a value beyond a label's limit is reported as.
OTHER = "other"
#: The task-name label of a message naming no task this worker knows.
UNKNOWN = "unknown"


class BoundedLabel:
    """Passes the first ``limit`` distinct values through; later ones become ``other``.

    ``normalise`` maps a raw value first (for example, keeps a reason's fixed
    prefix and drops the user text after it).
    """

    def __init__(self, limit: int, normalise: Callable[[str], str] | None = None) -> None:
        self.limit = limit
        self._normalise = normalise
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if self._normalise is not None:
            value = self._normalise(value)
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class TaskNames:
    """Registered task names pass; any other name (a bad or foreign message) is ``unknown``."""

    def __init__(self, known: Collection[str]) -> None:
        self.known = known

    def __call__(self, name: str | None) -> str:
        return name if name is not None and name in self.known else UNKNOWN


def reason_prefix(reason: str) -> str:
    """A dead-letter reason without the user text it may carry (``Reject('...')``)."""
    for mark in ("(", ":"):
        reason = reason.split(mark, 1)[0]
    return reason.strip() or UNKNOWN
