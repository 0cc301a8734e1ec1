"""Limit commands: ``rate_limit`` and ``time_limit`` for one task name, live.

The new values apply to tasks admitted from now on (a task already waiting
for its rate limit keeps its turn; a running one keeps its time limits) and
last until the worker stops, as in Celery. The limits themselves live in
``worker/limits.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import ImproperlyConfigured
from ..logging import get_logger
from ..message import finite
from ..plugins import ControlCommand
from .policy import require_destructive

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("control")


def _seconds(value: Any) -> float | None:
    """Seconds, or None for no limit; NaN and infinities are refused (ValueError)."""
    if value is None or value == "":
        return None
    return finite(float(value), "time limit", ValueError)


async def rate_limit(worker: Worker, task_name: str = "", rate_limit: Any = None,
                     **_: Any) -> dict[str, str]:
    """``celery control rate_limit TASK RATE`` (``"10/s"``, ``"5/m"``; empty: no limit)."""
    require_destructive(worker, "rate_limit")
    if task_name not in worker.app.tasks:
        log.error("rate limit for an unknown task", task=task_name)
        return {"error": "unknown task"}
    try:
        worker.limits.set_rate(task_name, rate_limit)
    except ImproperlyConfigured as exc:
        return {"error": f"Invalid rate limit string: {exc!r}"}
    if not rate_limit:
        log.info("rate limit removed", task=task_name)
        return {"ok": "rate limit disabled successfully"}
    log.info("rate limit changed", task=task_name, rate_limit=rate_limit)
    return {"ok": "new rate limit set successfully"}


async def time_limit(worker: Worker, task_name: str = "", hard: Any = None, soft: Any = None,
                     **_: Any) -> dict[str, str]:
    """``celery control time_limit TASK SOFT [HARD]``: both replaced (missing: no limit)."""
    require_destructive(worker, "time_limit")
    if task_name not in worker.app.tasks:
        log.error("time limit for an unknown task", task=task_name)
        return {"error": "unknown task"}
    try:
        worker.limits.set_time_limits(task_name, soft=_seconds(soft), hard=_seconds(hard))
    except ValueError as exc:
        return {"error": f"invalid time limit: {exc}"}
    log.info("time limits changed", task=task_name, soft=soft, hard=hard)
    return {"ok": "time limits set successfully"}


COMMANDS: dict[str, ControlCommand] = {"rate_limit": rate_limit, "time_limit": time_limit}
