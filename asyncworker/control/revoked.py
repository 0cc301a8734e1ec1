"""Revoked task ids (kept in memory like Celery's, and persisted across restarts),
and revoked stamps (``revoke_by_stamped_headers``, in memory only, as in Celery)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

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

    def __bool__(self) -> bool:
        """Whether any id is held (expired ones count until looked up)."""
        return bool(self._ids)

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


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def revoking_stamp(headers: Mapping[str, Any],
                   revoked: Mapping[str, list[Any]]) -> dict[str, Any] | None:
    """The stamp (``{header: value}``) by which a message is revoked, if any.

    A message lists its stamp names in ``stamped_headers`` and their values in
    ``stamps``; a value (or any of a list of values) among the revoked ones for
    that name revokes it.
    """
    if not revoked:
        return None
    stamps = headers.get("stamps") or {}
    for name in headers.get("stamped_headers") or ():
        if name not in revoked or not isinstance(stamps, Mapping):
            continue
        value = stamps.get(name)
        if value is None:
            continue
        wanted = _as_list(revoked[name])
        for one in _as_list(value):
            if one in wanted:
                return {name: one}
    return None
