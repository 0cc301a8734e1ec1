"""Worker-wide commands: ``shutdown`` and the pool commands.

There is no pool of processes: the "pool" is the global concurrency slot.
``pool_grow`` / ``pool_shrink`` resize it by ``n`` (and the prefetch window
with it, as Celery does), ``autoscale`` sets it to ``max`` (an asyncio worker
has nothing to reclaim by scaling down, so ``min`` is only echoed back).
``shutdown`` is a warm shutdown, as on SIGTERM; it sends no reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..logging import get_logger
from ..plugins import ControlCommand
from .pidbox import NO_REPLY
from .policy import require_destructive

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("control")


async def shutdown(worker: Worker, msg: str = "Got shutdown from remote", **_: Any) -> object:
    """``celery control shutdown``: warm shutdown, exit status 0."""
    require_destructive(worker, "shutdown")
    log.warning("shutdown requested by remote control", message=msg, kind="warm")
    worker.request_stop()
    return NO_REPLY


async def _resize(worker: Worker, concurrency: int) -> None:
    require_destructive(worker, "pool resize")
    await worker.resize(max(1, concurrency))


async def pool_grow(worker: Worker, n: int = 1, **_: Any) -> dict[str, str]:
    """``celery control pool_grow N``: ``n`` more tasks at once."""
    await _resize(worker, worker.concurrency + int(n))
    return {"ok": "pool will grow"}


async def pool_shrink(worker: Worker, n: int = 1, **_: Any) -> dict[str, str]:
    """``celery control pool_shrink N``: ``n`` fewer (at least one); running tasks finish."""
    await _resize(worker, worker.concurrency - int(n))
    return {"ok": "pool will shrink"}


async def autoscale(worker: Worker, max: int | None = None, min: int | None = None,
                    **_: Any) -> dict[str, str]:
    """``celery control autoscale MAX MIN``: run up to ``max`` tasks at once."""
    if max is not None:
        await _resize(worker, int(max))
    else:
        require_destructive(worker, "autoscale")
    low = worker.concurrency if min is None else int(min)
    return {"ok": f"autoscale now max={worker.concurrency} min={low}"}


async def pool_restart(worker: Worker, **_: Any) -> None:
    """Reloading task modules in place is not offered: restart the worker instead."""
    raise NotImplementedError("pool_restart is not supported by asyncworker: restart the worker")


async def election(worker: Worker, **_: Any) -> None:
    """Gossip elections: there is no gossip, so nothing to elect (as Celery without it)."""
    return None


COMMANDS: dict[str, ControlCommand] = {
    "shutdown": shutdown, "pool_grow": pool_grow, "pool_shrink": pool_shrink,
    "autoscale": autoscale, "pool_restart": pool_restart, "election": election}
