"""Receive deliveries, turn each into a ``Job``, and send it through admission.

One message's path: the broker calls ``on_message``, which starts one asyncio
task, ``_handle``: decode (bad input: REJECTED, dead-lettered), look the task
up (unknown: FAILURE ``NotRegistered`` stored, then REJECTED), build
``self.request``, fire ``task_received``, then the admission chain, whose end
is ``Executor.execute``. Jobs not yet started are cancelled at a warm shutdown
and their messages requeued.
"""

from __future__ import annotations

import asyncio
import time

from .. import protocol, serialization
from ..app import App
from ..broker.base import Broker, Delivery
from ..broker.frames import undecodable_reason
from ..broker.topology import QueueSpec
from ..exceptions import ContentDisallowed, InvalidTaskError, NotRegistered
from ..hooks import WorkerHooks
from ..logging import get_logger
from ..settings import Settings
from ..task import Request
from .executor import Executor
from .job import ACTIVE, CANCELLED, REJECTED, RESERVED, Job, Outcome
from .middleware import CallNext
from .state import WorkerState

log = get_logger("consumer")


class Consumer:
    """Consumes the worker's queues and hands each message to the admission chain."""

    def __init__(self, app: App, settings: Settings, broker: Broker, executor: Executor,
                 state: WorkerState, hooks: WorkerHooks, admit: CallNext) -> None:
        self.app = app
        self.settings = settings
        self.broker = broker
        self.executor = executor
        self.state = state
        self.hooks = hooks
        self.admit = admit
        self.hostname = settings.worker_nodename
        self.accept = serialization.accepted(settings.accept_content)
        self.handlers: set[asyncio.Task[None]] = set()
        self.stopping = False
        #: The queues consumed now, by name (``inspect active_queues``).
        self.queues: dict[str, QueueSpec] = {}

    async def start(self, queues: list[QueueSpec]) -> None:
        """Set the prefetch window, declare the queues and start consuming them."""
        self.broker.prefer_local_prefetch(queues)
        await self.broker.set_prefetch(self.settings.prefetch_count())
        for spec in queues:
            await self.add_queue(spec)

    async def add_queue(self, spec: QueueSpec) -> bool:
        """Declare and consume one more queue; False when it is consumed already."""
        if spec.name in self.queues or self.stopping:
            return False
        await self.broker.consume(spec, self.on_message,
                                  passive=self.settings.broker_passive_declare)
        self.queues[spec.name] = spec
        return True

    async def cancel_queue(self, name: str) -> bool:
        """Stop consuming the queue ``name`` (messages already here still run)."""
        if self.queues.pop(name, None) is None:
            return False
        return await self.broker.cancel_consumer(name)

    async def on_message(self, delivery: Delivery) -> None:
        """Broker callback: start a handler task and return at once."""
        if self.stopping:
            await delivery.requeue()
            return
        job = Job(delivery, received=time.time())
        handler = job.handler = asyncio.get_running_loop().create_task(self._handle(job))
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)

    # -- shutdown --------------------------------------------------------------
    async def stop_consuming(self) -> None:
        """Warm shutdown, step one: no new messages; requeue those not started."""
        self.stopping = True
        await self.broker.cancel_consumers()
        for job in [*self.state.reserved, *self.state.scheduled]:
            if job.handler is not None:
                job.handler.cancel()

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

    # -- one message -----------------------------------------------------------
    async def _handle(self, job: Job) -> None:
        try:
            if self._receive(job):
                await self.admit(job)
            elif job.outcome is not None:
                await self.executor.finish(job, job.outcome)
        except asyncio.CancelledError:
            # Not started yet (warm shutdown): hand the message back to the broker.
            if job.state != ACTIVE and not job.closed:
                await asyncio.shield(self.executor.finish(job, Outcome(CANCELLED)))
                return
            raise
        except Exception as exc:
            # A bug of ours must not kill the consumer or strand the message.
            log.exception("unexpected error handling message", task_id=job.id,
                          error=repr(exc))
            if not job.closed:
                await self.executor.finish(job, Outcome(
                    REJECTED, exc=exc, reason=f"internal error: {exc!r}"))
        finally:
            self.state.done(job)

    def _receive(self, job: Job) -> bool:
        """Decode and look the task up; False (with ``job.outcome`` set) when refused."""
        delivery = job.delivery
        undecodable = undecodable_reason(delivery.headers)
        if undecodable is not None:
            # Its properties did not decode (broker/frames.py): nothing to run.
            log.error("message with undecodable properties rejected", reason=undecodable,
                      queue=delivery.queue, delivery_tag=getattr(delivery, "delivery_tag", None))
            job.outcome = Outcome(REJECTED, reason=undecodable)
            return False
        try:
            message = protocol.decode(
                delivery.body, delivery.headers, delivery.content_type,
                delivery.content_encoding, self.accept, reply_to=delivery.reply_to,
                correlation_id=delivery.correlation_id, priority=delivery.priority,
                allow_nan=self.settings.task_json_allow_nan)
        except (ContentDisallowed, InvalidTaskError) as exc:
            job.outcome = Outcome(REJECTED, exc=exc, reason=f"{type(exc).__name__}: {exc}")
            return False
        job.message = message
        task = self.app.tasks.get(message.task)
        ignore = message.ignore_result if message.ignore_result else bool(
            task is not None and task.option("ignore_result"))
        job.request = Request.from_message(
            message, hostname=self.hostname, ignore_result=ignore,
            delivery_info={"exchange": delivery.exchange, "routing_key": delivery.routing_key,
                           "priority": delivery.priority, "redelivered": delivery.redelivered})
        # The request holds every field of the message (shared): keep one object per job.
        job.message = job.request
        if task is None:
            job.outcome = Outcome(REJECTED, exc=NotRegistered(message.task),
                                  reason=f"unknown task {message.task!r}")
            return False
        job.task = task
        self.state.move(job, RESERVED)
        self.hooks.task_received(job)
        return True
