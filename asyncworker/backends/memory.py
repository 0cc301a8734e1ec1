"""An in-process result backend, for tests without a database.

States are encoded with the configured result serializer (so a value a real
backend could not store fails the same way) and kept in a dict; a stored
SUCCESS is never overwritten, as in the real backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .. import states
from .base import ResultBackend, ResultCodec, StoredResult, TaskOutcome


class MemoryBackend(ResultBackend):
    """Task states in a dict."""

    def __init__(self, serializer: str = "json") -> None:
        self.codec = ResultCodec(serializer)
        self.results: dict[str, StoredResult] = {}
        #: Every state written, in order (for assertions): (task id, state).
        self.history: list[tuple[str, str]] = []
        self.revoked: dict[str, float] = {}
        self.groups: dict[str, Any] = {}

    async def setup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def store(self, outcome: TaskOutcome) -> None:
        encoded = self.codec.encode(outcome.result)
        self.history.append((outcome.task_id, outcome.state))
        current = self.results.get(outcome.task_id)
        if current is not None and current.state == states.SUCCESS:
            return
        self.results[outcome.task_id] = StoredResult(
            outcome.task_id, outcome.state, self.codec.decode(encoded), outcome.traceback,
            datetime.now(UTC) if outcome.ready else None)

    async def get(self, task_id: str) -> StoredResult | None:
        return self.results.get(task_id)

    async def save_revoked(self, task_id: str, when: float) -> None:
        self.revoked[task_id] = when

    async def load_revoked(self, since: float) -> list[tuple[str, float]]:
        return [(task_id, when) for task_id, when in self.revoked.items() if when >= since]

    def describe(self) -> str:
        return "memory"
