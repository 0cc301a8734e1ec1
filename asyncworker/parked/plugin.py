"""The ``parked`` built-in plugin: record parked tasks, list them in ``scheduled``.

Per worker whose broker can park (RabbitMQ) and whose hold limit is set:

* ``Recorder`` (hooks): on ``task_parked``, the task's ``inspect scheduled``
  entry is recorded under this node, with where it waits and when the broker
  brings it back (one batched write; the park itself does not wait for it);
* ``StoreService`` (service): opens and closes the store;
* ``scheduled`` (control command, replacing the core one): the tasks held in
  memory, then this node's parked records not held here.

Which node lists a parked task: the one that parked it, under the same node
name after a restart. When the message comes back, the worker that receives
it holds it in memory (and lists it from there) or parks it again, which moves
the record to that worker's node. A record is written just after the park is
confirmed; a worker killed in between parked the task (it is safe in the
broker) but does not list it until it comes back.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..control import describe
from ..control.inspect import scheduled as held_in_memory
from ..hooks import WorkerHooks
from ..logging import get_logger
from ..plugins import ControlCommand, Plugin
from ..services import MAILBOX, Service
from .store import ParkedStore, ParkedTask, create

if TYPE_CHECKING:
    from ..worker.job import Job
    from ..worker.worker import Worker

log = get_logger("parked")


def entry(job: Job, delay_queue: str, returns_at: float) -> dict[str, Any]:
    """``job``'s ``inspect scheduled`` entry, with where it is parked."""
    found = describe.scheduled_info(job)
    found["parked"] = {"delay_queue": delay_queue,
                       "returns_at": datetime.fromtimestamp(returns_at, UTC).isoformat()}
    return found


class Recorder(WorkerHooks):
    """Records each task this worker parks."""

    def __init__(self, store: ParkedStore, node: str) -> None:
        self.store, self.node = store, node

    def task_parked(self, job: Job, delay_queue: str, returns_at: float) -> None:
        assert job.id is not None
        self.store.put(ParkedTask(job.id, self.node, returns_at,
                                  entry(job, delay_queue, returns_at)))


class StoreService(Service):
    """Open the store before the first message, close it after the last."""

    name = "parked"
    order = MAILBOX + 5  # before anything that could park or be asked to list

    def __init__(self, store: ParkedStore) -> None:
        self.store = store

    async def start(self, worker: Worker) -> None:
        await self.store.setup()

    async def stop(self) -> None:
        await self.store.close()


class ParkedPlugin(Plugin):
    """Built in: acts when the worker's broker can park far-future tasks."""

    name = "parked"

    def __init__(self) -> None:
        self._stores: weakref.WeakKeyDictionary[Worker, ParkedStore | None] = (
            weakref.WeakKeyDictionary())

    def store(self, worker: Worker) -> ParkedStore | None:
        """``worker``'s store, made on first use (None: it never parks)."""
        if worker not in self._stores:
            s = worker.settings
            parks = worker.broker.can_park and s.worker_eta_hold_limit is not None
            self._stores[worker] = (create(s.result_backend, s.result_batch_size)
                                    if parks else None)
        return self._stores[worker]

    def hooks(self, worker: Worker) -> Iterable[WorkerHooks]:
        store = self.store(worker)
        return () if store is None else [Recorder(store, worker.settings.worker_nodename)]

    def services(self, worker: Worker) -> Iterable[Service]:
        store = self.store(worker)
        return () if store is None else [StoreService(store)]

    def control_commands(self) -> Mapping[str, ControlCommand]:
        return {"scheduled": self.scheduled}

    async def scheduled(self, worker: Worker, **arguments: Any) -> list[dict[str, Any]]:
        """``celery inspect scheduled``: held until their ETA here, then parked by this node."""
        held = await held_in_memory(worker, **arguments)
        store = self.store(worker)
        if store is None:
            return held
        try:
            parked = await store.listing(worker.settings.worker_nodename, time.time())
        except Exception as exc:  # the database is down: list what is known here
            log.warning("could not read parked tasks", error=repr(exc), store=store.describe)
            return held
        here = {item["request"]["id"] for item in held}
        return held + [record.entry for record in parked if record.task_id not in here]
