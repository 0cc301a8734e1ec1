"""``Revoked``: a task revoked by id is finished REVOKED without running."""

from __future__ import annotations

from asyncworker import states
from asyncworker.control.tasks import revoke
from asyncworker.worker.admission.revoked import Revoked
from asyncworker.worker.job import REVOKED
from asyncworker.worker.state import WorkerState

from .helpers import Finished, Kit, Next, RecordingHooks, make_job, send_control, task_ids


async def test_revoked_id_is_finished_revoked_and_not_passed_on(kit: Kit) -> None:
    """A job whose id is in the revoked set ends REVOKED ("revoked"); nothing after runs."""
    state, finish, call_next = WorkerState(), Finished(), Next()
    job = await make_job(kit.app, "t.add", (1, 2))
    assert job.id is not None
    state.revoked.add(job.id)
    await Revoked(state, finish)(job, call_next)
    assert not call_next.called
    assert [(o.kind, o.reason) for o in finish.outcomes] == [(REVOKED, "revoked")]


async def test_other_ids_go_on(kit: Kit) -> None:
    """A job not revoked goes on to ``call_next`` and is not finished here."""
    state, finish, call_next = WorkerState(), Finished(), Next()
    state.revoked.add("someone-else")
    job = await make_job(kit.app, "t.add", (1, 2))
    await Revoked(state, finish)(job, call_next)
    assert call_next.jobs == [job]
    assert finish.calls == []


async def test_revoked_before_receipt_is_stored_acked_and_never_run(
        kit: Kit, rec: RecordingHooks) -> None:
    """In a worker: REVOKED is stored, the message acked, ``task_revoked`` fired, no body run."""
    async with kit.run([rec]) as worker:
        worker.state.revoked.add("rev-1")
        await kit.add.apply_async((1, 2), task_id="rev-1")
        stored = await worker.stored("rev-1")
        await worker.idle()
    assert stored.state == states.REVOKED
    assert stored.result["exc_type"] == "TaskRevokedError"
    assert kit.runs == []
    assert rec.points("rev-1") == ["task_received", "task_revoked"]
    assert task_ids(worker.broker.acked) == ["rev-1"]


async def test_revoked_while_waiting_for_a_slot_is_caught_before_start(
        kit: Kit, rec: RecordingHooks) -> None:
    """The check runs again once a slot is held: a job revoked while it waited never runs."""
    async with kit.run([rec], worker_concurrency=1) as worker:
        blocker = await kit.block.delay()
        await worker.wait_for(lambda: kit.gate.entered)
        await kit.add.apply_async((1, 2), task_id="late-revoke")
        await worker.wait_for(lambda: len(worker.state.reserved) == 1)
        worker.state.revoked.add("late-revoke")
        kit.gate.open()
        stored = await worker.stored("late-revoke")
        await worker.idle()
    assert stored.state == states.REVOKED
    assert kit.runs == [blocker.id]
    assert rec.closings("late-revoke") == ["task_revoked"]


async def test_terminate_cancels_the_running_task_and_stores_revoked(
        kit: Kit, rec: RecordingHooks) -> None:
    """``revoke(terminate=True)`` cancels a running task: REVOKED ("terminated"), acked once."""
    async with kit.run([rec], task_acks_late=True) as worker:
        result = await kit.block.delay()
        await worker.wait_for(lambda: worker.state.running(result.id))
        await revoke(worker.worker, result.id, terminate=True)
        stored = await worker.stored(result.id)
        await worker.idle()
    assert stored.state == states.REVOKED
    assert [(c.point, c.reason) for c in rec.of("task_revoked")] == [("task_revoked",
                                                                      "terminated")]
    assert rec.closings(result.id) == ["task_revoked"]
    assert task_ids(worker.broker.acked) == [result.id]
    assert worker.broker.rejected == []
    assert result.id in worker.backend.revoked


async def test_revoke_through_the_mailbox_reaches_a_busy_worker(
        kit: Kit, rec: RecordingHooks) -> None:
    """A ``revoke`` control message gets through while task messages fill the prefetch
    window, and control messages never use that window up."""
    async with kit.run([rec], worker_concurrency=1, worker_prefetch_multiplier=1,
                       task_acks_late=True) as worker:
        await kit.block.delay()
        await worker.wait_for(lambda: kit.gate.entered)  # the window (1) is now full
        for _ in range(3):
            await send_control(worker.broker, "ping")
        await send_control(worker.broker, "revoke", task_id="doomed")
        await worker.wait_for(lambda: "doomed" in worker.state.revoked)
        await kit.add.apply_async((1, 2), task_id="doomed")
        after = await kit.add.delay(2, 2)
        kit.gate.open()
        assert await worker.result(after.id) == 4
        assert (await worker.stored("doomed")).state == states.REVOKED
    assert rec.closings("doomed") == ["task_revoked"]
