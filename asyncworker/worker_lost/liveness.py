"""Who a worker process is, and whether another one is still alive.

A worker's token is ``<nodename>|<pid namespace>|<pid>|<random>``: unique per
process start, so a restarted worker (same node name, maybe the same pid in a
container) is a different owner. Two ways to learn that an owner died:

* on the same host and pid namespace (a supervisor restarting the worker in
  place), at once: its pid is gone, or is our own;
* anywhere, by its lease: a live worker refreshes it every
  ``worker_lost_heartbeat`` seconds; one not refreshed within ``lease_ttl``
  (plus a heartbeat) of looking belongs to a dead worker. A worker whose
  broker link merely dropped keeps refreshing, so its redelivered messages
  are not taken for deaths; nor is one that could not reach the database for
  a while, since a lease that looks lapsed still gets its full period.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from ..logging import get_logger
from .store import LostStore

log = get_logger("worker_lost")


def pid_namespace() -> str:
    """This kernel boot and pid namespace ('' where /proc cannot tell)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def new_token(nodename: str) -> str:
    """A token naming this worker process."""
    return f"{nodename}|{pid_namespace()}|{os.getpid()}|{uuid.uuid4().hex[:12]}"


def run_owner(me: str, run: int) -> str:
    """The owner written for one run: this process's token and the run's number,
    so that releasing one run never clears a later run of the same task id (a
    retry)."""
    return f"{me}#{run}"


def worker_of(owner: str) -> str:
    """The process token in a marker's owner."""
    return owner.partition("#")[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gone_locally(owner: str, me: str) -> bool:
    """Whether ``owner`` is surely dead, judged from this host alone."""
    try:
        _, namespace, pid_text, _ = owner.rsplit("|", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    _, my_namespace, _, _ = me.rsplit("|", 3)
    if not namespace or namespace != my_namespace or owner == me:
        return False
    return pid == os.getpid() or not _pid_alive(pid)


class Liveness:
    """Judges owners of markers: alive, or dead (remembered once dead)."""

    def __init__(self, store: LostStore, me: str, heartbeat: float, ttl: float) -> None:
        self.store = store
        self.me = me
        self.heartbeat = heartbeat
        self.ttl = ttl
        self._dead: set[str] = set()
        self._judging: dict[str, asyncio.Future[bool]] = {}

    async def dead(self, owner: str) -> bool:
        """Whether ``owner`` has died; may wait up to the lease ttl to tell."""
        if owner == self.me:
            return False
        if owner in self._dead:
            return True
        # Suspects of one death ask about the same owner at once: judge it once.
        judging = self._judging.get(owner)
        if judging is None:
            judging = asyncio.ensure_future(self._judge(owner))
            self._judging[owner] = judging
            judging.add_done_callback(lambda _: self._judging.pop(owner, None))
        return await asyncio.shield(judging)

    async def _judge(self, owner: str) -> bool:
        if gone_locally(owner, self.me):
            self._dead.add(owner)
            return True
        # Dead only after a whole lease period without a refresh: a lease that
        # looks lapsed may belong to a worker that could not reach the database
        # for a while and refreshes it as soon as it can.
        first = await self.store.lease(owner, self.ttl)
        deadline = time.monotonic() + self.ttl + self.heartbeat
        while time.monotonic() < deadline:
            await asyncio.sleep(self.heartbeat / 2)
            beat = await self.store.lease(owner, self.ttl)
            if beat is not None and beat != first:
                return False  # refreshed since we began looking: alive
        self._dead.add(owner)
        return True
