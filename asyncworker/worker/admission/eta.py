"""Hold a task until its ETA (``countdown`` / ``eta``) without taking a slot.

While held, the job is *scheduled* in ``WorkerState`` and its delivery is
held aside (on RabbitMQ the prefetch window grows by one), so held messages
never starve ready ones; it starts within milliseconds of its ETA.

No message is held unacked longer than ``worker_eta_hold_limit``: RabbitMQ
would close the channel past its ``consumer_timeout``. One due later is
parked in a delay queue (``broker/delay.py``) and comes back shortly before
its ETA; a broker that cannot park (the in-memory one) holds it as before.
A parked task is announced with the ``task_parked`` hook, which the
``parked`` plugin records so that ``inspect scheduled`` still lists it.
When parking fails, the message is held for the limit at most and then
handed back to the broker, which delivers it again for another try.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime

from ...broker import delay as delay_queues
from ...broker.base import Broker
from ...broker.topology import Topology
from ...hooks import WorkerHooks
from ...logging import get_logger
from ..job import RECEIVED, RESERVED, SCHEDULED, Job
from ..middleware import CallNext
from ..state import WorkerState

log = get_logger("eta")


class Eta:
    """Wait until ``job.message.eta``, or park the message when that is too far."""

    def __init__(self, state: WorkerState, broker: Broker | None = None,
                 hold_limit: float | None = None, topology: Topology | None = None,
                 hooks: WorkerHooks | None = None) -> None:
        self.state = state
        self.hooks = hooks
        self.broker = broker if broker is not None and broker.can_park else None
        self.hold_limit = hold_limit
        #: Buckets take their queue's type (quorum in a cluster).
        self.topology = topology

    def __call__(self, job: Job, call_next: CallNext) -> Awaitable[None]:
        # No ETA: a tail call (middleware.py), no frame kept while the task runs.
        assert job.message is not None
        eta = job.message.eta
        if eta is None:
            return call_next(job)
        return self._held(job, eta, call_next)

    async def _held(self, job: Job, eta: datetime, call_next: CallNext) -> None:
        delay = (eta - datetime.now(UTC)).total_seconds()
        limit = self.hold_limit
        hand_back = False
        if self.broker is not None and delay_queues.should_park(delay, limit):
            assert limit is not None
            if await self._park(job, delay, limit):
                return
            # Not parked: hold it for the limit at most, then hand it back.
            delay, hand_back = limit, True
        if delay > 0:
            self.state.move(job, SCHEDULED)
            async with job.delivery.hold():
                await asyncio.sleep(delay)
            self.state.move(job, RESERVED)
        if hand_back:
            log.warning("task not parked within the hold limit; handed back to the "
                        "broker", task_id=job.id, task=job.name, eta=eta.isoformat())
            await job.delivery.requeue()
            return
        await call_next(job)

    async def _park(self, job: Job, delay: float, limit: float) -> bool:
        """Park ``job``'s message; True when it has left this worker."""
        assert self.broker is not None
        level = delay_queues.bucket_level(delay, limit)
        assert level is not None
        # Out of the reserved set: a warm shutdown cancels reserved jobs, and a
        # park cut between the publish and the ack would leave two copies.
        self.state.move(job, RECEIVED)
        queue_type = (self.topology.queue_type(job.delivery.queue) if self.topology
                      else "classic")
        parking = asyncio.ensure_future(
            delay_queues.park(self.broker, job.delivery, level, queue_type))
        try:
            await asyncio.shield(parking)
        except asyncio.CancelledError:
            await asyncio.wait([parking])  # milliseconds; then leave as it ended
            if not parking.cancelled() and parking.exception() is None:
                job.closed = True  # parked: nothing is to be settled or reported
            raise
        except Exception as exc:
            log.warning("could not park task; holding it here", task_id=job.id,
                        task=job.name, error=repr(exc), hold_limit=limit)
            self.state.move(job, RESERVED)
            return False
        # It has left: no closing hook fires (it is received again on its return).
        job.closed = True
        assert job.message is not None and job.message.eta is not None
        delay_queue = delay_queues.bucket_name(job.queue, 2 ** level)
        log.info("task parked until its ETA", task_id=job.id, task=job.name,
                 eta=job.message.eta.isoformat(), bucket=2 ** level, delay_queue=delay_queue)
        if self.hooks is not None:
            self.hooks.task_parked(job, delay_queue, time.time() + 2 ** level)
        return True
