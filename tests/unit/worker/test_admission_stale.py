"""``Stale``: a job whose delivery the broker already took back is dropped before it
starts, and its message is left alone."""

from __future__ import annotations

import pytest

from asyncworker.backends.memory import MemoryBackend
from asyncworker.broker.memory import MemoryBroker, MemoryDelivery
from asyncworker.hooks import HookSet
from asyncworker.worker.admission.stale import Stale
from asyncworker.worker.executor import Executor
from asyncworker.worker.job import CANCELLED, Job
from asyncworker.worker.state import WorkerState

from .helpers import Finished, Kit, Next, RecordingHooks, make_job


class _StaleDelivery(MemoryDelivery):
    __slots__ = ()

    def is_stale(self) -> bool:
        return True


def _stale(job: Job) -> Job:
    delivery = job.delivery
    assert isinstance(delivery, MemoryDelivery)
    job.delivery = _StaleDelivery(delivery._broker, delivery.stored, delivery.queue)
    return job


async def test_stale_delivery_is_finished_cancelled(kit: Kit) -> None:
    """A stale delivery ends the job CANCELLED ("stale"); nothing after runs."""
    finish, call_next = Finished(), Next()
    job = _stale(await make_job(kit.app, "t.add", (1, 2)))
    await Stale(finish)(job, call_next)
    assert not call_next.called
    assert [(o.kind, o.reason) for o in finish.outcomes] == [(CANCELLED, "stale")]


async def test_live_delivery_goes_on(kit: Kit) -> None:
    """A delivery the broker still holds for us goes on."""
    finish, call_next = Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2))
    await Stale(finish)(job, call_next)
    assert call_next.jobs == [job] and finish.calls == []


async def test_executor_neither_acks_nor_requeues_a_stale_job(
        kit: Kit, rec: RecordingHooks) -> None:
    """Finished by the executor: ``task_cancelled`` fires, nothing is stored or settled."""
    broker, backend, state = MemoryBroker(), MemoryBackend(), WorkerState()
    executor = Executor(backend, broker, HookSet([state, rec]), state, "unit@test")
    job = _stale(await make_job(kit.app, "t.add", (1, 2), broker=broker))
    await Stale(executor.finish)(job, Next())
    assert rec.closings() == ["task_cancelled"]
    assert not job.delivery.settled
    assert broker.acked == [] and broker.rejected == []
    assert len(broker.published) == 1  # make_job's own publish: nothing republished
    assert backend.history == []


async def test_worker_drops_a_stale_message_before_it_starts(
        kit: Kit, rec: RecordingHooks, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a worker: the body never runs; the other messages are unaffected."""
    monkeypatch.setattr(MemoryDelivery, "is_stale",
                        lambda self: self.headers.get("id") == "gone")
    async with kit.run([rec]) as worker:
        await kit.add.apply_async((1, 2), task_id="gone")
        live = await kit.add.delay(3, 4)
        assert await worker.result(live.id) == 7
        await worker.wait_for(lambda: rec.closed("gone"))
        await worker.idle()
    assert kit.runs == [live.id]
    assert [(c.point, c.reason) for c in rec.of("task_cancelled")] == [("task_cancelled",
                                                                        "stale")]
    assert "gone" not in worker.backend.results
    assert worker.broker.settled_ids() == {"acked": [live.id], "rejected": []}
