"""``Dedupe``: a redelivered copy of a task that ran, or is running here, is not run again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from asyncworker import states
from asyncworker.backends.base import StoredResult, TaskOutcome
from asyncworker.backends.memory import MemoryBackend
from asyncworker.backoff import BackoffPolicy
from asyncworker.broker.memory import MemoryBroker
from asyncworker.worker.admission.dedupe import Dedupe
from asyncworker.worker.job import ACTIVE, CANCELLED, IGNORED, REJECTED, Job, Outcome
from asyncworker.worker.state import WorkerState

from .helpers import (
    Finished,
    Kit,
    Next,
    RecordingHooks,
    encoded,
    make_job,
    publish_redelivered,
    task_ids,
)


class _BrokenBackend(MemoryBackend):
    async def get(self, task_id: str) -> StoredResult | None:
        raise ValueError("undecodable row")


class _RestartingBackend(MemoryBackend):
    """Unreachable for its first two reads."""

    def __init__(self) -> None:
        super().__init__("json")
        self.failures = 2

    async def get(self, task_id: str) -> StoredResult | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError(111, "database restarting")
        return await super().get(task_id)


async def _stored(backend: MemoryBackend, task_id: str, state: str) -> None:
    await backend.store(TaskOutcome(task_id, state, 3 if state == states.SUCCESS else None))


@pytest.mark.parametrize(("stored_state", "duplicate"), [
    (states.SUCCESS, True), (states.FAILURE, True), (states.REVOKED, True),
    (states.RETRY, False), (states.STARTED, False), (None, False),
])
async def test_redelivered_copy_is_dropped_only_when_a_final_state_is_stored(
        kit: Kit, stored_state: str | None, duplicate: bool) -> None:
    """Only a ready state (SUCCESS, FAILURE, REVOKED) marks a redelivered copy a duplicate."""
    backend, finish, call_next = MemoryBackend(), Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2), redelivered=True)
    assert job.id is not None
    if stored_state is not None:
        await _stored(backend, job.id, stored_state)
    await Dedupe(WorkerState(), backend, finish)(job, call_next)
    if duplicate:
        assert not call_next.called
        assert [(o.kind, o.reason) for o in finish.outcomes] == [(IGNORED, "duplicate")]
    else:
        assert call_next.jobs == [job] and finish.calls == []


async def test_first_delivery_is_never_checked(kit: Kit) -> None:
    """A message not flagged redelivered runs even if a result is stored for its id."""
    backend, finish, call_next = MemoryBackend(), Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2))
    assert job.id is not None
    await _stored(backend, job.id, states.SUCCESS)
    await Dedupe(WorkerState(), backend, finish)(job, call_next)
    assert call_next.jobs == [job] and finish.calls == []


@pytest.mark.parametrize("backend", [None, _BrokenBackend()], ids=["no-backend", "broken"])
async def test_without_a_usable_backend_the_copy_runs(
        kit: Kit, backend: MemoryBackend | None) -> None:
    """No backend, or one that cannot be read: the redelivered copy runs (not lost)."""
    finish, call_next = Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2), redelivered=True)
    await Dedupe(WorkerState(), backend, finish)(job, call_next)
    assert call_next.jobs == [job] and finish.calls == []


async def test_an_unreachable_backend_is_waited_for_not_guessed(kit: Kit) -> None:
    """A transient error retries the check: a finished task is still not run again."""
    backend, finish, call_next = _RestartingBackend(), Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2), redelivered=True)
    assert job.message is not None
    await _stored(backend, job.message.id, states.SUCCESS)
    dedupe = Dedupe(WorkerState(), backend, finish)
    dedupe.outage.policy = BackoffPolicy(initial=0.001)
    await dedupe(job, call_next)
    assert call_next.jobs == [] and len(finish.calls) == 1 and backend.failures == 0


@dataclass
class _Redelivery:
    """A job active here, its redelivered copy in ``Dedupe``, and the way to end the first."""

    first: Job
    copy: Job
    checking: asyncio.Task[None]
    release: asyncio.Event
    finish: Finished
    call_next: Next


async def _copy_of_running(kit: Kit) -> _Redelivery:
    broker, state, finish, call_next = MemoryBroker(), WorkerState(), Finished(), Next()
    first = await make_job(kit.app, "t.add", (1, 2), broker=broker, task_id="same")
    release = asyncio.Event()
    first.handler = asyncio.create_task(release.wait())
    state.move(first, ACTIVE)
    copy = await make_job(kit.app, "t.add", (1, 2), broker=broker, task_id="same",
                          redelivered=True)
    checking = asyncio.create_task(Dedupe(state, None, finish)(copy, call_next))
    return _Redelivery(first, copy, checking, release, finish, call_next)


async def test_copy_of_a_task_running_here_waits_for_it_then_is_dropped(kit: Kit) -> None:
    """A redelivered copy of an active job waits for that job's handler, then ends IGNORED."""
    r = await _copy_of_running(kit)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(r.checking), 0.03)
    assert r.finish.calls == []
    r.release.set()
    await asyncio.wait_for(r.checking, 1)
    assert [(j, o.kind, o.reason) for j, o in r.finish.calls] == [
        (r.copy, IGNORED, "duplicate")]
    assert not r.call_next.called


@pytest.mark.parametrize("handed_back", [
    Outcome(REJECTED, reason="Reject", requeue=True), Outcome(CANCELLED)],
    ids=["reject-requeue", "cancelled"])
async def test_copy_runs_when_the_first_run_handed_its_message_back(
        kit: Kit, handed_back: Outcome) -> None:
    """A first run that ends by giving its message back (``Reject(requeue=True)``, a
    cold shutdown) is no reason to drop the copy: it is the run that counts."""
    r = await _copy_of_running(kit)
    r.first.outcome = handed_back
    r.release.set()
    await asyncio.wait_for(r.checking, 1)
    assert r.finish.calls == []
    assert r.call_next.called


async def test_worker_acks_a_redelivered_finished_task_without_running_it(
        kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: the copy is acked, ``task_ignored`` ("duplicate"), the body never runs."""
    async with kit.run([rec]) as worker:
        await _stored(worker.backend, "done-1", states.SUCCESS)
        await publish_redelivered(worker.broker, encoded("t.add", (1, 2), task_id="done-1"))
        await worker.wait_for(lambda: rec.closed("done-1"))
        await worker.idle()
    assert kit.runs == []
    assert [(c.point, c.reason) for c in rec.of("task_ignored")] == [("task_ignored",
                                                                      "duplicate")]
    assert task_ids(worker.broker.acked) == ["done-1"]
    assert worker.backend.history == [("done-1", states.SUCCESS)]  # nothing stored again


async def test_worker_runs_a_task_once_when_its_copy_arrives_mid_run(
        kit: Kit, rec: RecordingHooks) -> None:
    """A late-ack task and its redelivered copy: one run, one result, both messages acked."""
    async with kit.run([rec], task_acks_late=True) as worker:
        await kit.block.apply_async((7,), task_id="twice")
        await worker.wait_for(lambda: kit.gate.entered)
        await publish_redelivered(worker.broker, encoded("t.block", (7,), task_id="twice"))
        await worker.wait_for(lambda: rec.of("task_received", "twice")[1:])
        assert worker.broker.acked == []  # the copy waits for the first run
        kit.gate.open()
        await worker.wait_for(lambda: rec.closed("twice", 2))
        await worker.idle()
    assert kit.runs == ["twice"]
    assert sorted(rec.closings("twice")) == ["task_ignored", "task_succeeded"]
    assert task_ids(worker.broker.acked) == ["twice", "twice"]
    rec.assert_one_closing_per_job()
