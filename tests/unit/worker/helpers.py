"""Shared pieces of the worker unit tests.

* ``RecordingHooks``: every hook call, in order, with queries for assertions;
* ``make_job``: a ``Job`` as the consumer builds it, from a ``MemoryBroker``;
* ``Next`` / ``Finished``: a recording ``call_next`` and ``finish`` for a
  middleware tested alone;
* ``Kit``: a fresh ``App`` with a few tasks, and ``Kit.run`` to serve it with
  ``asyncworker.testing.run_worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncworker import App, Task, protocol, serialization
from asyncworker.broker.memory import MemoryBroker, MemoryDelivery
from asyncworker.broker.topology import ExchangeSpec, QueueSpec
from asyncworker.hooks import CLOSING, WorkerHooks
from asyncworker.message import TaskMessage, new_id
from asyncworker.protocol import OutgoingMessage
from asyncworker.task import Request
from asyncworker.testing import TestWorker, run_worker
from asyncworker.worker.job import Job, Outcome

DEFAULT_QUEUE = "celery"


# -- hooks -------------------------------------------------------------------
@dataclass(slots=True)
class Call:
    """One hook call, with what the job said at that moment."""

    point: str
    job: Job | None
    task_id: str | None = None
    #: ``job.outcome.kind`` when the hook fired (None before there is one).
    kind: str | None = None
    #: ``task_dead_lettered``'s reason, else ``job.outcome.reason``.
    reason: str = ""
    #: What the recorder's ``probe`` returned at that moment.
    probe: Any = None


class RecordingHooks(WorkerHooks):
    """Records every hook call; ``probe(point, job)`` may capture more at call time."""

    def __init__(self, probe: Callable[[str, Job], Any] | None = None) -> None:
        self.calls: list[Call] = []
        self.probe = probe

    def _job(self, point: str, job: Job, reason: str | None = None) -> None:
        outcome = job.outcome
        if reason is None:
            reason = outcome.reason if outcome is not None else ""
        self.calls.append(Call(point, job, job.id, outcome.kind if outcome else None, reason,
                               self.probe(point, job) if self.probe else None))

    def worker_ready(self, worker: Any) -> None:
        self.calls.append(Call("worker_ready", None))

    def worker_stopping(self, worker: Any, cold: bool) -> None:
        self.calls.append(Call("worker_stopping", None, reason="cold" if cold else "warm"))

    def task_received(self, job: Job) -> None:
        self._job("task_received", job)

    def task_started(self, job: Job) -> None:
        self._job("task_started", job)

    def task_succeeded(self, job: Job) -> None:
        self._job("task_succeeded", job)

    def task_failed(self, job: Job) -> None:
        self._job("task_failed", job)

    def task_retried(self, job: Job) -> None:
        self._job("task_retried", job)

    def task_rejected(self, job: Job) -> None:
        self._job("task_rejected", job)

    def task_ignored(self, job: Job) -> None:
        self._job("task_ignored", job)

    def task_revoked(self, job: Job) -> None:
        self._job("task_revoked", job)

    def task_expired(self, job: Job) -> None:
        self._job("task_expired", job)

    def task_cancelled(self, job: Job) -> None:
        self._job("task_cancelled", job)

    def task_dead_lettered(self, job: Job, reason: str) -> None:
        self._job("task_dead_lettered", job, reason)

    # -- queries ---------------------------------------------------------------
    def points(self, task_id: str | None = None) -> list[str]:
        """Hook points in order (of one task id, when given)."""
        return [c.point for c in self.calls if task_id is None or c.task_id == task_id]

    def of(self, point: str, task_id: str | None = None) -> list[Call]:
        """The calls of one point (of one task id, when given)."""
        return [c for c in self.calls
                if c.point == point and (task_id is None or c.task_id == task_id)]

    def closings(self, task_id: str | None = None) -> list[str]:
        """Closing hooks fired, in order (of one task id, when given)."""
        return [p for p in self.points(task_id) if p in CLOSING]

    def closed(self, task_id: str, count: int = 1) -> bool:
        """Whether ``task_id`` has had at least ``count`` closing hooks (for ``wait_for``)."""
        return len(self.closings(task_id)) >= count

    def closing_by_job(self) -> dict[Job, list[str]]:
        """The closing hooks each job got."""
        out: dict[Job, list[str]] = {}
        for call in self.calls:
            if call.job is not None and call.point in CLOSING:
                out.setdefault(call.job, []).append(call.point)
        return out

    def assert_one_closing_per_job(self) -> None:
        """Every received job, and every job that closed at all, closed exactly once."""
        closing = self.closing_by_job()
        for call in self.of("task_received"):
            assert call.job is not None
            assert len(closing.get(call.job, [])) == 1, (call.task_id, closing.get(call.job))
        for job, points in closing.items():
            assert len(points) == 1, (job.id, points)


# -- jobs for a middleware alone ---------------------------------------------------
async def until(predicate: Callable[[], Any], timeout: float = 2.0) -> Any:
    """Poll ``predicate`` on the loop until it is truthy (AssertionError after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.001)
    return value


def declare(broker: MemoryBroker, queue: str = DEFAULT_QUEUE) -> None:
    """Declare ``queue`` on the default exchange (routing key = queue name)."""
    broker.declare(QueueSpec(queue, ExchangeSpec(""), queue))


async def make_job(app: App, name: str, args: Sequence[Any] = (),
                   kwargs: dict[str, Any] | None = None, *,
                   broker: MemoryBroker | None = None, queue: str = DEFAULT_QUEUE,
                   redelivered: bool = False, **options: Any) -> Job:
    """A ``Job`` as the consumer builds it, its delivery taken from ``broker``.

    ``options`` are ``apply_async`` options (``eta``, ``expires``, ``task_id``,
    ``time_limit``, ``link`` ...). The message is encoded, published, taken
    back and decoded, so the job carries what a worker would see.
    """
    broker = broker if broker is not None else MemoryBroker()
    declare(broker, queue)
    await broker.publish("", queue, protocol.encode(
        TaskMessage.from_options(name, args, kwargs, options)))
    delivery = await broker.get(queue)
    assert isinstance(delivery, MemoryDelivery)
    delivery.stored.redelivered = redelivered
    message = protocol.decode(delivery.body, delivery.headers, delivery.content_type,
                              delivery.content_encoding, serialization.accepted(["json"]),
                              reply_to=delivery.reply_to,
                              correlation_id=delivery.correlation_id,
                              priority=delivery.priority)
    task = app.tasks.get(name)
    ignore = bool(message.ignore_result or (task is not None and task.option("ignore_result")))
    request = Request.from_message(
        message, hostname="unit@test", ignore_result=ignore,
        delivery_info={"exchange": delivery.exchange, "routing_key": delivery.routing_key,
                       "priority": delivery.priority, "redelivered": delivery.redelivered})
    return Job(delivery, message, task, request, received=time.time())


class Next:
    """A recording ``call_next``: each job it got, when, and how many at once.

    ``action(job)`` runs inside (to wait on a gate, set an outcome or raise).
    """

    def __init__(self, action: Callable[[Job], Awaitable[None]] | None = None) -> None:
        self.action = action
        self.jobs: list[Job] = []
        self.times: list[float] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, job: Job) -> None:
        self.jobs.append(job)
        self.times.append(asyncio.get_running_loop().time())
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.action is not None:
                await self.action(job)
        finally:
            self.running -= 1

    @property
    def called(self) -> bool:
        """Whether any job went on."""
        return bool(self.jobs)


class Finished:
    """A recording ``finish``: the outcomes jobs were ended with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Job, Outcome]] = []

    async def __call__(self, job: Job, outcome: Outcome) -> None:
        job.outcome = outcome
        self.calls.append((job, outcome))

    @property
    def outcomes(self) -> list[Outcome]:
        """The outcomes, in order."""
        return [outcome for _, outcome in self.calls]


# -- an app with a few tasks ---------------------------------------------------------
class Gate:
    """Holds task bodies until opened; records who entered, in order."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self._open = asyncio.Event()

    async def wait(self, who: str) -> None:
        """Enter and wait for ``open``."""
        self.entered.append(who)
        await self._open.wait()

    def open(self) -> None:
        """Let every waiting (and later) body through."""
        self._open.set()


@dataclass
class Kit:
    """A fresh App with a few tasks, and what their bodies did.

    ``t.add(a, b)``, ``t.fail(message)`` (raises ValueError), ``t.block(...)``
    (waits on ``gate``), ``t.sleep(seconds)`` and ``t.sync_add(a, b)`` (a plain
    ``def``); every body appends its task id to ``runs`` when it starts.
    """

    app: App
    gate: Gate
    add: Task
    fail: Task
    block: Task
    sleep: Task
    sync_add: Task
    runs: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def run(self, hooks: Iterable[WorkerHooks] = (),
                  **settings: Any) -> AsyncIterator[TestWorker]:
        """``run_worker`` for this app; the gate opens before the worker stops."""
        settings.setdefault("worker_shutdown_timeout", 2.0)
        async with run_worker(self.app, hooks=list(hooks), **settings) as worker:
            try:
                yield worker
            finally:
                self.gate.open()


_apps = itertools.count(1)


def make_kit() -> Kit:
    """A new App (its own settings and registry) with the kit's tasks."""
    app = App(f"unit-{next(_apps)}")
    gate = Gate()
    runs: list[str] = []

    @app.task(name="t.add", bind=True)
    async def add(self: Task, a: int, b: int) -> int:
        runs.append(self.request.id)
        return a + b

    @app.task(name="t.fail", bind=True)
    async def fail(self: Task, message: str = "boom") -> None:
        runs.append(self.request.id)
        raise ValueError(message)

    @app.task(name="t.block", bind=True)
    async def block(self: Task, value: Any = None) -> Any:
        runs.append(self.request.id)
        await gate.wait(self.request.id)
        return value

    @app.task(name="t.sleep", bind=True)
    async def sleep(self: Task, seconds: float) -> float:
        runs.append(self.request.id)
        await asyncio.sleep(seconds)
        return seconds

    @app.task(name="t.sync_add", bind=True)
    def sync_add(self: Task, a: int, b: int) -> int:
        runs.append(self.request.id)
        return a + b

    return Kit(app, gate, add, fail, block, sleep, sync_add, runs)


# -- messages ------------------------------------------------------------------------
def signature(name: str, *args: Any, immutable: bool = False, **options: Any) -> dict[str, Any]:
    """A Celery signature dict, as a client sends it (``options`` may hold ``task_id``)."""
    return {"task": name, "args": list(args), "kwargs": {}, "options": options,
            "subtask_type": None, "immutable": immutable}


def raw_message(body: bytes, headers: dict[str, Any] | None = None, *,
                content_type: str = "application/json",
                task_id: str | None = None) -> OutgoingMessage:
    """A message as it might arrive, however malformed."""
    task_id = task_id or new_id()
    return OutgoingMessage(body=body, headers=headers if headers is not None else {"id": task_id},
                           content_type=content_type, content_encoding="utf-8",
                           correlation_id=task_id, reply_to=None, priority=None,
                           expiration_ms=None)


async def publish_redelivered(broker: MemoryBroker, message: OutgoingMessage,
                              queue: str = DEFAULT_QUEUE) -> None:
    """Put ``message`` in ``queue`` flagged ``redelivered``, as after a lost channel."""
    await broker.publish("", queue, message)
    # publish() does not yield, so the pump has not taken it yet.
    broker.queues[queue].ready[-1].redelivered = True


def encoded(name: str, args: Sequence[Any] = (), **options: Any) -> OutgoingMessage:
    """A protocol-2 message for ``name``, as ``send_task`` would publish it."""
    return protocol.encode(TaskMessage.from_options(name, args, None, options))


async def send_control(broker: MemoryBroker, method: str, **arguments: Any) -> None:
    """Broadcast a remote-control command (``app.control.<method>``) to the mailboxes."""
    body = serialization.dumps({"method": method, "arguments": arguments, "destination": None})
    await broker.publish("celery.pidbox", "", OutgoingMessage(
        body=body, headers={}, content_type=serialization.JSON, content_encoding="utf-8",
        correlation_id="", reply_to=None, priority=None, expiration_ms=None))


def task_ids(deliveries: Iterable[Any]) -> list[str]:
    """The task ids of deliveries (``broker.acked``) or ``(delivery, requeue)`` pairs."""
    out = []
    for item in deliveries:
        delivery = item[0] if isinstance(item, tuple) else item
        out.append(str(delivery.headers.get("id")))
    return out
