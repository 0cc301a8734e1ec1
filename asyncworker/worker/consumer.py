"""Receive messages, check them, and hand them to the executor.

One message's path: ``on_message`` → ``_handle``: decode (bad input is logged
and rejected), look the task up (unknown: FAILURE ``NotRegistered`` stored,
then reject), drop expired tasks and redelivered duplicates, hold an ETA until
due (raising QoS so it does not take a prefetch slot), wait for a concurrency
slot, then ``Executor.execute``. Handlers not yet started are cancelled at a
warm shutdown and their messages requeued.
"""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from .. import protocol, serialization, states
from ..app import App
from ..backends.base import ResultBackend, TaskOutcome, exception_to_meta
from ..broker.amqp import AmqpBroker, is_stale, settle
from ..broker.topology import QueueSpec
from ..control.revoked import RevokedSet
from ..deadletter import DeadLetters
from ..exceptions import ContentDisallowed, InvalidTaskError, NotRegistered
from ..logging import get_logger
from ..settings import Settings
from ..task import Request, Task
from .executor import Delivery, Executor
from .hooks import WorkerHooks
from .limits import Limits

log = get_logger("consumer")


class Qos:
    """basic.qos prefetch that ETA messages raise and lower, applied in order."""

    def __init__(self, broker: AmqpBroker, base: int) -> None:
        self.broker = broker
        self.target = base
        self.applied: int | None = None
        # Global QoS, unless a quorum queue is consumed (RabbitMQ refuses it there;
        # then, as in Celery, held ETA messages count against the window).
        self.global_ = True
        self._lock = asyncio.Lock()

    async def adjust(self, delta: int) -> None:
        """Change the prefetch by ``delta`` (0 = unlimited stays unlimited)."""
        if self.target == 0 or not self.global_:
            return
        self.target += delta
        await self.apply()

    async def apply(self) -> None:
        """Send the latest target to the broker if it changed."""
        async with self._lock:
            if self.applied != self.target:
                value = self.target
                await self.broker.set_qos(value, self.global_)
                self.applied = value


class Running:
    """A task executing here: its request, its handler, and an event set when done."""

    __slots__ = ("done", "handler", "request")

    def __init__(self, request: Request, handler: asyncio.Task[None]) -> None:
        self.request = request
        self.handler = handler
        self.done = asyncio.Event()


def build_request(msg: protocol.TaskMessage, task: Task, message: AbstractIncomingMessage,
                  hostname: str) -> Request:
    """The ``self.request`` of a decoded message; the header's ignore_result wins."""
    ignore = msg.ignore_result if msg.ignore_result else bool(task.option("ignore_result"))
    return Request(
        id=msg.id,
        task=msg.task,
        args=msg.args,
        kwargs=msg.kwargs,
        retries=msg.retries,
        root_id=msg.root_id,
        parent_id=msg.parent_id,
        group=msg.group,
        group_index=msg.group_index,
        eta=msg.eta,
        expires=msg.expires,
        hostname=hostname,
        delivery_info={
            "exchange": message.exchange or "",
            "routing_key": message.routing_key,
            "priority": message.priority,
            "redelivered": bool(message.redelivered),
        },
        headers=msg.headers,
        callbacks=msg.embed.get("callbacks"),
        errbacks=msg.embed.get("errbacks"),
        chain=msg.embed.get("chain"),
        chord=msg.embed.get("chord"),
        reply_to=msg.reply_to,
        correlation_id=msg.correlation_id,
        origin=msg.origin,
        ignore_result=ignore,
        timelimit=(msg.time_limit, msg.soft_time_limit),
    )


class Consumer:
    """Consumes the worker's queues and dispatches each message."""

    def __init__(self, app: App, settings: Settings, broker: AmqpBroker,
                 backend: ResultBackend | None, executor: Executor, hooks: WorkerHooks) -> None:
        self.app = app
        self.settings = settings
        self.broker = broker
        self.backend = backend
        self.executor = executor
        self.hooks = hooks
        self.hostname = settings.worker_nodename
        self.accept = serialization.accepted(settings.accept_content)
        self.semaphore = asyncio.Semaphore(settings.worker_concurrency)
        self.limits = Limits(settings)
        self.dead_letters = DeadLetters(broker, app.topology, settings)
        self.qos = Qos(broker, settings.prefetch_count())
        self.handlers: set[asyncio.Task[None]] = set()
        self.waiting: set[asyncio.Task[None]] = set()
        self.running: set[asyncio.Task[None]] = set()
        # Tasks executing here, by id (to terminate them, and to hold back
        # redelivered copies while they run).
        self.active: dict[str, Running] = {}
        self.revoked = RevokedSet()
        self.stopping = False

    async def start(self, queues: list[QueueSpec]) -> None:
        """Set QoS, declare the queues and start consuming them."""
        if any(q.arguments.get("x-queue-type") == "quorum" for q in queues):
            self.qos.global_ = False
            log.warning("quorum queues consumed: per-consumer QoS, so ETA messages held "
                        "here count against the prefetch window")
        await self.qos.apply()
        for spec in queues:
            await self.broker.consume(spec, functools.partial(self.on_message, spec.name),
                                      passive=self.settings.broker_passive_declare)

    async def on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        """aio-pika callback: start a handler task and return at once."""
        if self.stopping:
            await settle(message, "reject", requeue=True)
            return
        handler = asyncio.create_task(self._handle(message, queue))
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)

    async def stop_consuming(self) -> None:
        """Warm shutdown, step one: no new messages; requeue those not started."""
        self.stopping = True
        await self.broker.cancel_consumers()
        for handler in list(self.waiting):
            handler.cancel()

    async def drain(self, timeout: float | None) -> bool:
        """Wait for running tasks; True when all finished in time."""
        pending = {h for h in self.handlers if not h.done()}
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def cancel_running(self) -> None:
        """Cold shutdown: cancel everything still in flight and wait for the cleanup."""
        pending = [h for h in self.handlers if not h.done()]
        for handler in pending:
            handler.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one message ---------------------------------------------------------
    def _decode(self, message: AbstractIncomingMessage) -> protocol.TaskMessage:
        """Decode, or log why not and raise."""
        try:
            return protocol.decode(
                message.body,
                message.headers,
                message.content_type,
                message.content_encoding,
                self.accept,
                reply_to=message.reply_to,
                correlation_id=message.correlation_id,
                priority=message.priority,
            )
        except (ContentDisallowed, InvalidTaskError) as exc:
            task_id = protocol.peek_task_id(message.headers, message.correlation_id)
            self.hooks.task_rejected(task_id, f"{type(exc).__name__}: {exc}", False)
            raise

    async def _handle(self, message: AbstractIncomingMessage, queue: str) -> None:
        current = asyncio.current_task()
        assert current is not None
        self.waiting.add(current)
        delivery = Delivery(message, queue, self.dead_letters)
        try:
            try:
                msg = self._decode(message)
            except (ContentDisallowed, InvalidTaskError) as exc:
                await delivery.dead_letter(None, f"{type(exc).__name__}: {exc}", exc)
                return
            task = self.app.tasks.get(msg.task)
            if task is None:
                await self._unknown_task(msg, message, delivery)
                return
            request = build_request(msg, task, message, self.hostname)
            self.hooks.task_received(request)
            if await self._expired(request, delivery) or await self._duplicate(
                    request, delivery):
                return
            if request.eta is not None:
                await self._hold_until(request.eta)
            await self.limits.wait_rate(task)
            async with self.limits.caps(task.name, queue), self.semaphore:
                if is_stale(message):
                    log.info("channel closed before the task started; the broker "
                             "redelivers it", task_id=request.id)
                    return
                # Checked again just before running, as Celery does.
                if await self._expired(request, delivery):
                    return
                self.waiting.discard(current)
                self.running.add(current)
                running = self.active[request.id] = Running(request, current)
                try:
                    await self.executor.execute(task, request, delivery)
                finally:
                    running.done.set()
                    if self.active.get(request.id) is running:
                        del self.active[request.id]
        except asyncio.CancelledError:
            # Not started yet (warm shutdown): hand the message back to the broker.
            if current in self.waiting and not delivery.settled:
                await asyncio.shield(delivery.reject(protocol.peek_task_id(
                    message.headers, message.correlation_id), requeue=True))
                return
            raise
        except Exception as exc:
            # A bug of ours must not kill the consumer or strand the message.
            task_id = protocol.peek_task_id(message.headers, message.correlation_id)
            log.exception("unexpected error handling message", task_id=task_id,
                          error=repr(exc))
            await delivery.dead_letter(task_id, f"internal error: {exc!r}", exc)
        finally:
            self.waiting.discard(current)
            self.running.discard(current)

    async def _unknown_task(self, msg: protocol.TaskMessage, message: AbstractIncomingMessage,
                            delivery: Delivery) -> None:
        exc = NotRegistered(msg.task)
        request = Request(id=msg.id, task=msg.task, args=msg.args, kwargs=msg.kwargs,
                          retries=msg.retries, hostname=self.hostname,
                          delivery_info={"routing_key": message.routing_key})
        stored = await self.executor.store(
            TaskOutcome(msg.id, states.FAILURE, exception_to_meta(exc), None, request)
        )
        self.hooks.task_failed(request, exc, 0.0)
        self.hooks.task_rejected(msg.id, f"unknown task {msg.task!r}", False)
        if not stored:
            log.error("could not store NotRegistered failure", task_id=msg.id)
        await delivery.dead_letter(msg.id, f"unknown task {msg.task!r}", exc)

    async def _expired(self, request: Request, delivery: Delivery) -> bool:
        """Store REVOKED and ack when the task was revoked or its expiry has passed."""
        if request.id in self.revoked:
            await self.executor.revoke(request, delivery, "revoked")
            return True
        if request.expires is not None and request.expires <= datetime.now(UTC):
            await self.executor.revoke(request, delivery, "expired")
            return True
        return False

    async def revoke(self, task_ids: list[str], terminate: bool) -> list[str]:
        """Revoke ids (persisted); with ``terminate``, cancel those running here."""
        now = time.time()
        for task_id in task_ids:
            self.revoked.add(task_id, now)
            if self.backend is not None:
                try:
                    await self.backend.save_revoked(task_id, now)
                except Exception as exc:
                    log.warning("could not persist revoked id", task_id=task_id,
                                error=repr(exc))
        terminated = []
        if terminate:
            for task_id in task_ids:
                running = self.active.get(task_id)
                if running is not None:
                    running.request.terminated = True
                    running.handler.cancel()
                    terminated.append(task_id)
        return terminated

    async def load_revoked(self) -> None:
        """Restore revoked ids persisted by earlier runs."""
        if self.backend is None:
            return
        try:
            for task_id, when in await self.backend.load_revoked(
                    time.time() - self.revoked.ttl):
                self.revoked.add(task_id, when)
        except Exception as exc:
            log.warning("could not load revoked ids", error=repr(exc))

    async def _duplicate(self, request: Request, delivery: Delivery) -> bool:
        """Ack, without running, a redelivery of a task that ran or runs here."""
        if not request.delivery_info.get("redelivered"):
            return False
        running_here = self.active.get(request.id)
        if running_here is not None:
            # The connection dropped while this task ran here; the broker sent it
            # again. Let the first run finish instead of starting a second one.
            log.info("redelivered task is still running here; waiting for it",
                     task_id=request.id)
            await running_here.done.wait()
            await delivery.ack(request.id)
            return True
        if self.backend is not None:
            # The ack of a finished task can be lost with the connection; Celery
            # runs such a redelivery again. Its stored state tells us it is done.
            try:
                stored = await self.backend.get(request.id)
            except Exception as exc:
                log.warning("could not check redelivered task", task_id=request.id,
                            error=repr(exc))
                return False
            if stored is not None and stored.state in states.READY_STATES:
                log.info("redelivered task already finished; acking", task_id=request.id,
                         state=stored.state)
                await delivery.ack(request.id)
                return True
        return False

    async def _hold_until(self, eta: datetime) -> None:
        delay = (eta - datetime.now(UTC)).total_seconds()
        if delay <= 0:
            return
        # An unacked ETA message counts against prefetch; widen the window meanwhile.
        await self.qos.adjust(+1)
        try:
            await asyncio.sleep(delay)
        finally:
            await asyncio.shield(self.qos.adjust(-1))
