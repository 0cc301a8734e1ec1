"""Revoked task ids: kept in memory like Celery's, and persisted across restarts."""

from __future__ import annotations

import time
from collections import OrderedDict

# Celery keeps 50,000 revoked ids for 3 hours.
MAX_REVOKED = 50_000
REVOKED_TTL = 3 * 3600.0


class RevokedSet:
    """Task ids not to run, each forgotten after ``ttl`` seconds."""

    def __init__(self, ttl: float = REVOKED_TTL, limit: int = MAX_REVOKED) -> None:
        self.ttl = ttl
        self.limit = limit
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, task_id: str, when: float | None = None) -> None:
        """Remember ``task_id`` as revoked at ``when`` (now by default)."""
        self._ids[task_id] = time.time() if when is None else when
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        when = self._ids.get(task_id) if isinstance(task_id, str) else None
        if when is None:
            return False
        if time.time() - when > self.ttl:
            del self._ids[task_id]  # type: ignore[arg-type]
            return False
        return True

    def ids(self) -> list[str]:
        """The ids still revoked."""
        now = time.time()
        return [i for i, when in self._ids.items() if now - when <= self.ttl]
