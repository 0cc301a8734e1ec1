"""The remote-control commands every worker answers, registered by name.

A command is ``async def name(worker, **arguments)``; its return value is the
reply (``{"ok": ...}`` or any JSON value, as Celery's). More commands come
from plugins or ``app.control_command(name)``; the mailbox looks them up
in ``app.control_commands``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..logging import get_logger
from ..plugins import ControlCommand

if TYPE_CHECKING:
    from ..worker.worker import Worker

log = get_logger("control")


async def ping(worker: Worker, **_: Any) -> dict[str, str]:
    """``app.control.ping()``."""
    return {"ok": "pong"}


async def revoke(worker: Worker, task_id: str | list[str], terminate: bool = False,
                 signal: Any = None, **_: Any) -> dict[str, str]:
    """Revoke ids (persisted in the result backend); ``terminate`` cancels running ones."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    now = time.time()
    backend = worker.backend
    for one in ids:
        worker.state.revoked.add(one, now)
        if backend is not None:
            try:
                await backend.save_revoked(one, now)
            except Exception as exc:
                log.warning("could not persist revoked id", task_id=one, error=repr(exc))
    terminated = []
    if terminate:
        for one in ids:
            job = worker.state.running(one)
            if job is not None and job.handler is not None:
                job.terminated = True
                job.handler.cancel()
                terminated.append(one)
    # Celery's reply text.
    return {"ok": f"tasks {', '.join(ids)} flagged as revoked"
            + (f"; terminated {', '.join(terminated)}" if terminated else "")}


BUILTIN: dict[str, ControlCommand] = {
    "ping": ping,
    "revoke": revoke,
}
