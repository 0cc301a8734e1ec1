"""The worker's Lamport clock, as Celery keeps one per app.

Every control reply carries it (header ``clock``), ``inspect clock`` and
``stats`` report it, and a clock seen on an incoming message moves it forward,
so that monitors can order what several workers said.
"""

from __future__ import annotations


class LamportClock:
    """A logical clock: ``forward`` for an event here, ``adjust`` for one seen."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def forward(self) -> int:
        """Advance for an event of ours; the new value."""
        self.value += 1
        return self.value

    def adjust(self, other: object) -> int:
        """Take a clock seen elsewhere into account; the new value."""
        if isinstance(other, int) and not isinstance(other, bool):
            self.value = max(self.value, other) + 1
        return self.value
