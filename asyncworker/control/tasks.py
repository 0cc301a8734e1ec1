"""Revocation commands: ``revoke``, ``terminate`` and ``revoke_by_stamped_headers``.

A revoked id is remembered (and persisted in the result backend, so a restart
keeps it; while the backend is unreachable the write is retried in the
background, and the reply does not wait for it); a revoked stamp is
remembered in memory, as in Celery. Either way
the task is refused when its message arrives, or when it reaches the front of
the queue for a slot. ``terminate`` also cancels the coroutine running it:
the task ends REVOKED with ``TaskRevokedError('terminated')``, and the other
tasks of the process go on. There is no process to signal, so ``signal`` is
accepted and ignored; a plain ``def`` task cannot be stopped in its thread, so
its result is REVOKED at once while the function runs to its end unobserved.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..backends.errors import retry_transient
from ..backoff import Outage
from ..logging import get_logger
from ..plugins import ControlCommand
from .policy import require_destructive
from .revoked import revoking_stamp

if TYPE_CHECKING:
    from ..worker.job import Job
    from ..worker.worker import Worker

log = get_logger("control")

# Revoked-id writes still retrying (referenced so they are not collected).
_persisting: set[asyncio.Task[None]] = set()


async def _persist_revoked(worker: Worker, task_id: str, when: float) -> None:
    backend = worker.backend
    assert backend is not None
    try:
        await retry_transient(lambda: backend.save_revoked(task_id, when),
                              Outage("result backend", backend.describe(), None, log))
    except Exception as exc:
        log.warning("could not persist revoked id", task_id=task_id, error=repr(exc))


def _ids(task_id: str | list[str] | None) -> list[str]:
    if task_id is None:
        return []
    return [task_id] if isinstance(task_id, str) else [str(one) for one in task_id]


def _terminate(job: Job) -> bool:
    """Cancel the coroutine running ``job``, marking it terminated."""
    if job.handler is None or job.handler.done() or job.terminated:
        return False
    job.terminated = True
    job.handler.cancel()
    log.info("terminating task", task_id=job.id, task=job.name)
    return True


async def revoke(worker: Worker, task_id: str | list[str] | None = None,
                 terminate: bool = False, signal: Any = None, **_: Any) -> dict[str, str]:
    """Revoke ids (persisted in the result backend); ``terminate`` cancels running ones."""
    if terminate:
        require_destructive(worker, "revoke with terminate")
    ids = _ids(task_id)
    now = time.time()
    backend = worker.backend
    for one in ids:
        worker.state.revoked.add(one, now)
        if backend is not None:
            persisting = asyncio.create_task(_persist_revoked(worker, one, now))
            _persisting.add(persisting)
            persisting.add_done_callback(_persisting.discard)
    if not terminate:
        log.info("tasks flagged as revoked", task_ids=ids)
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
    terminated = [one for one in ids
                  if (job := worker.state.running(one)) is not None and _terminate(job)]
    # Celery's replies.
    if not terminated:
        return {"ok": "terminate: tasks unknown"}
    return {"ok": f"terminate: {', '.join(terminated)}"}


async def terminate(worker: Worker, signal: Any = None, task_id: str | list[str] | None = None,
                    **_: Any) -> dict[str, str]:
    """``celery control terminate SIGNAL id ...``: revoke and cancel (the signal is ignored)."""
    return await revoke(worker, task_id, terminate=True, signal=signal)


def _stamp_table(headers: Any) -> dict[str, Any]:
    # The CLI sends ["name=value", ...]; the API a mapping.
    if isinstance(headers, (list, tuple)):
        return dict(str(item).split("=", 1) for item in headers if "=" in str(item))
    return dict(headers or {})


async def revoke_by_stamped_headers(worker: Worker, headers: Any = None, terminate: bool = False,
                                    signal: Any = None, **_: Any) -> dict[str, str]:
    """Revoke every task stamped with one of the given values (``{stamp: value(s)}``)."""
    if terminate:
        require_destructive(worker, "revoke_by_stamped_headers with terminate")
    table = _stamp_table(headers)
    stamps = worker.state.revoked_stamps
    for name, values in table.items():
        known = stamps.setdefault(name, [])
        known.extend(v for v in (values if isinstance(values, (list, tuple)) else [values])
                     if v not in known)
    log.info("stamps revoked", stamps=table)
    if not terminate:
        return {"ok": f"headers {table} flagged as revoked, but not terminated"}
    hit: dict[str, list[Any]] = {}
    for job in list(worker.state.active.values()):
        found = revoking_stamp(job.message.headers, table) if job.message else None
        if found is not None and _terminate(job):
            for name, value in found.items():
                hit.setdefault(name, []).append(value)
    if not hit:
        return {"ok": f"headers {table} were not terminated"}
    return {"ok": f"headers {hit} revoked"}


COMMANDS: dict[str, ControlCommand] = {
    "revoke": revoke,
    "terminate": terminate,
    "revoke_by_stamped_headers": revoke_by_stamped_headers,
}
