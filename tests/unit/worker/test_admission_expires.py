"""``Expires``: a task whose ``expires`` has passed is finished REVOKED ("expired")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from asyncworker import states
from asyncworker.worker.admission.expires import Expires
from asyncworker.worker.job import REVOKED

from .helpers import Finished, Kit, Next, RecordingHooks, make_job, task_ids


def _ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def test_expired_job_is_finished_and_not_passed_on(kit: Kit) -> None:
    """An ``expires`` in the past ends the job REVOKED with reason "expired"."""
    finish, call_next = Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2), expires=_ago(1))
    await Expires(finish)(job, call_next)
    assert not call_next.called
    assert [(o.kind, o.reason) for o in finish.outcomes] == [(REVOKED, "expired")]


async def test_unexpired_and_unset_expiry_go_on(kit: Kit) -> None:
    """A future ``expires``, or none, goes on to ``call_next``."""
    finish, call_next = Finished(), Next()
    future = await make_job(kit.app, "t.add", (1, 2), expires=60)
    unset = await make_job(kit.app, "t.add", (1, 2))
    for job in (future, unset):
        await Expires(finish)(job, call_next)
    assert call_next.jobs == [future, unset]
    assert finish.calls == []


async def test_expired_message_fires_task_expired_stores_revoked_and_acks(
        kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: ``task_expired`` (not ``task_revoked``), REVOKED stored, message acked."""
    async with kit.run([rec]) as worker:
        result = await kit.add.apply_async((1, 2), expires=_ago(1))
        stored = await worker.stored(result.id)
        await worker.idle()
    assert stored.state == states.REVOKED
    assert rec.closings(result.id) == ["task_expired"]
    assert kit.runs == []
    assert task_ids(worker.broker.acked) == [result.id]
    assert worker.state.counts["expired"] == 1 and worker.state.counts["revoked"] == 0


async def test_expiry_is_checked_again_just_before_start(kit: Kit, rec: RecordingHooks) -> None:
    """A task that expires while held for its ETA is refused when the ETA comes."""
    async with kit.run([rec]) as worker:
        result = await kit.add.apply_async((1, 2), countdown=0.1, expires=0.03)
        await worker.wait_for(lambda: worker.state.scheduled)
        stored = await worker.stored(result.id)
        await worker.idle()
    assert stored.state == states.REVOKED
    assert rec.points(result.id) == ["task_received", "task_expired"]
    assert kit.runs == []
