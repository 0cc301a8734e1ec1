"""``WorkerState``: jobs move ``received → scheduled → reserved → active → done``, each in
one collection at a time, and counters follow the closing hooks."""

from __future__ import annotations

from asyncworker.hooks import HookSet
from asyncworker.worker.job import ACTIVE, DONE, RECEIVED, RESERVED, SCHEDULED, Job
from asyncworker.worker.state import WorkerState

from .helpers import Kit, RecordingHooks, make_job


def _where(state: WorkerState, job: Job) -> list[str]:
    found = []
    if job in state.reserved:
        found.append("reserved")
    if job in state.scheduled:
        found.append("scheduled")
    if job in state.active.values():
        found.append("active")
    return found


async def test_a_job_is_in_one_collection_at_a_time(kit: Kit) -> None:
    """Each move leaves the previous collection; ``done`` leaves them all."""
    state = WorkerState()
    job = await make_job(kit.app, "t.add", (1, 2))
    assert job.state == RECEIVED and _where(state, job) == []
    path = [(RESERVED, ["reserved"]), (SCHEDULED, ["scheduled"]), (RESERVED, ["reserved"]),
            (ACTIVE, ["active"])]
    for to, where in path:
        state.move(job, to)
        assert (job.state, _where(state, job)) == (to, where)
    assert job.id is not None and state.running(job.id) is job
    state.done(job)
    assert (job.state, _where(state, job)) == (DONE, [])
    assert state.running(job.id) is None


async def test_a_second_run_of_the_same_id_is_not_evicted_by_the_first(kit: Kit) -> None:
    """A retry or redelivered copy active under the same id stays when the first finishes."""
    state = WorkerState()
    first = await make_job(kit.app, "t.add", (1, 2), task_id="same")
    second = await make_job(kit.app, "t.add", (1, 2), task_id="same")
    state.move(first, ACTIVE)
    state.move(second, ACTIVE)
    state.done(first)
    assert state.running("same") is second
    state.done(second)
    assert state.active == {}


async def test_counters_follow_the_hooks(kit: Kit) -> None:
    """``received``, each closing kind, ``total`` by task name and dead letters are counted;
    ``snapshot`` reports them with what is held now."""
    state = WorkerState()
    hooks = HookSet([state])
    jobs = [await make_job(kit.app, name) for name in ("t.add", "t.add", "t.fail", "t.fail")]
    for job in jobs:
        hooks.task_received(job)
    hooks.task_succeeded(jobs[0])
    hooks.task_expired(jobs[1])
    hooks.task_failed(jobs[2])
    hooks.task_dead_lettered(jobs[2], "task failed")
    state.move(jobs[3], SCHEDULED)
    snapshot = state.snapshot()
    assert snapshot["counts"] == {"received": 4, "succeeded": 1, "expired": 1, "failed": 1,
                                  "dead_lettered": 1}
    assert snapshot["total"] == {"t.add": 2, "t.fail": 1}
    assert (snapshot["active"], snapshot["reserved"], snapshot["scheduled"]) == (0, 0, 1)


async def test_worker_state_while_running_and_after(kit: Kit, rec: RecordingHooks) -> None:
    """In a worker (one slot): one active, the rest reserved, an ETA task scheduled; all
    empty once done, with the counters matching the hooks."""
    async with kit.run([rec], worker_concurrency=1) as worker:
        running = await kit.block.delay(1)
        waiting = await kit.add.delay(1, 1)
        later = await kit.add.apply_async((2, 2), countdown=10)
        await worker.wait_for(lambda: worker.state.scheduled and kit.gate.entered
                              and worker.state.reserved)
        assert list(worker.state.active) == [running.id]
        assert [j.id for j in worker.state.reserved] == [waiting.id]
        assert [j.id for j in worker.state.scheduled] == [later.id]
        assert {j.state for j in worker.state.reserved} == {RESERVED}
        worker.state.revoked.add(later.id)
        kit.gate.open()
        await worker.result(waiting.id)
        await worker.wait_for(lambda: not worker.state.active and not worker.state.reserved)
        snapshot = worker.state.snapshot()
    assert snapshot["counts"] == {"received": 3, "succeeded": 2}
    assert snapshot["total"] == {"t.block": 1, "t.add": 1}
    assert (snapshot["active"], snapshot["reserved"], snapshot["scheduled"]) == (0, 0, 1)
    assert snapshot["revoked"] == 1
