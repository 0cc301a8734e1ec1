"""``Eta`` with a broker that can park: far ETAs leave for a delay queue (copy first,
then the ack), near ones are held, and a failed park holds for the limit at most and
hands the message back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from asyncworker.broker import delay
from asyncworker.broker.memory import MemoryBroker
from asyncworker.protocol import OutgoingMessage
from asyncworker.worker.admission.eta import Eta
from asyncworker.worker.job import RESERVED
from asyncworker.worker.state import WorkerState

from .helpers import DEFAULT_QUEUE, Kit, Next, make_job, until


class ParkingBroker(MemoryBroker):
    """The in-memory broker, told it can park (its bucket queues are plain queues)."""

    can_park = True

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.log: list[str] = []

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        if routing_key.startswith(delay.PREFIX):
            self.log.append(f"publish {routing_key}")
            if self.fail:
                raise ConnectionError("publish refused")
        await super().publish(exchange, routing_key, message)

    def _settled(self, delivery: object, ack: bool, requeue: bool) -> None:
        self.log.append("ack" if ack else f"reject requeue={requeue}")
        super()._settled(delivery, ack, requeue)  # type: ignore[arg-type]


async def test_far_eta_is_parked_copy_confirmed_before_the_ack(kit: Kit) -> None:
    broker, state = ParkingBroker(), WorkerState()
    eta = datetime.now(UTC) + timedelta(hours=1)
    job = await make_job(kit.app, "t.add", (1, 2), broker=broker, eta=eta)
    state.move(job, RESERVED)
    call_next = Next()
    await Eta(state, broker, hold_limit=600)(job, call_next)
    bucket = delay.bucket_name(DEFAULT_QUEUE, 2048)
    assert broker.log == [f"publish {bucket}", "ack"]
    assert not call_next.called and not state.scheduled and job not in state.reserved
    parked = broker.messages(bucket)
    assert len(parked) == 1
    assert parked[0].body == job.delivery.body
    assert parked[0].headers == job.delivery.headers  # the ETA header as it was
    spec = broker.queues[bucket].spec
    assert spec.arguments["x-dead-letter-routing-key"] == DEFAULT_QUEUE


async def test_eta_within_the_limit_is_held_not_parked(kit: Kit) -> None:
    broker, state = ParkingBroker(), WorkerState()
    eta = datetime.now(UTC) + timedelta(seconds=0.05)
    job = await make_job(kit.app, "t.add", (1, 2), broker=broker, eta=eta)
    call_next = Next()
    await Eta(state, broker, hold_limit=600)(job, call_next)
    assert call_next.jobs == [job] and broker.log == []
    assert datetime.now(UTC) >= eta


async def test_no_hold_limit_or_a_broker_that_cannot_park_holds(kit: Kit) -> None:
    """``worker_eta_hold_limit = None``, or the plain in-memory broker: held, as Celery."""
    for broker, limit in ((ParkingBroker(), None), (MemoryBroker(), 0.01)):
        state = WorkerState()
        job = await make_job(kit.app, "t.add", (1, 2), broker=broker,
                             eta=datetime.now(UTC) + timedelta(seconds=1.5))
        waiting = asyncio.create_task(Eta(state, broker, hold_limit=limit)(job, Next()))
        await until(lambda job=job, state=state: job in state.scheduled)  # type: ignore[misc]
        waiting.cancel()
        assert not broker.published[1:]  # nothing but the original was published


async def test_failed_park_holds_for_the_limit_then_hands_back(kit: Kit) -> None:
    broker, state = ParkingBroker(fail=True), WorkerState()
    job = await make_job(kit.app, "t.add", (1, 2), broker=broker,
                         eta=datetime.now(UTC) + timedelta(seconds=30))
    call_next = Next()
    run = asyncio.create_task(Eta(state, broker, hold_limit=0.2)(job, call_next))
    await until(lambda: job in state.scheduled)
    assert broker.log == [f"publish {delay.bucket_name(DEFAULT_QUEUE, 16)}"]
    await asyncio.wait_for(run, 2)
    assert broker.log[-1] == "reject requeue=True" and "ack" not in broker.log
    assert not call_next.called
