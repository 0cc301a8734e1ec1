"""Worker-lost detection: the gate's verdicts, isolation, markers, leases and liveness."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from asyncworker import App, states
from asyncworker.backends.base import TaskOutcome
from asyncworker.exceptions import WorkerLostError
from asyncworker.hooks import WorkerHooks
from asyncworker.worker.job import CANCELLED, FAILURE, REJECTED, SUCCESS, Job, Outcome
from asyncworker.worker_lost.gate import FAIL, ISOLATE, POISON, Runs, WorkerLost
from asyncworker.worker_lost.liveness import Liveness, gone_locally, new_token
from asyncworker.worker_lost.settings import WorkerLostSettings
from asyncworker.worker_lost.steps import MarkStarted, ReleaseMarker
from asyncworker.worker_lost.store import START, Marker, MemoryLostStore, coalesce

from .helpers import Next, make_job, until

ME = new_token("me@test")
OTHER = "other@test||4242|abc"  # another host: judged by its lease only


class LostHooks(WorkerHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, int, str]] = []

    def task_worker_lost(self, job: Job, deaths: int, action: str) -> None:
        self.calls.append((job.id, deaths, action))


class FakeExecutor:
    """Records what the gate finished and stored."""

    def __init__(self) -> None:
        self.finished: list[tuple[Job, Outcome]] = []
        self.stored: list[TaskOutcome] = []

    async def finish(self, job: Job, outcome: Outcome) -> None:
        job.outcome = outcome
        self.finished.append((job, outcome))

    async def store(self, outcome: TaskOutcome) -> bool:
        self.stored.append(outcome)
        return True


@pytest.fixture
def lost_app() -> App:
    app = App("unit-lost")

    @app.task(name="l.work", acks_late=True)
    async def work() -> None:
        return None

    @app.task(name="l.reject", acks_late=True, reject_on_worker_lost=True)
    async def reject() -> None:
        return None

    @app.task(name="l.early")
    async def early() -> None:
        return None

    return app


class Rig:
    """A gate on a memory store, with its liveness judged quickly."""

    def __init__(self, max_redeliveries: int = 3) -> None:
        self.store = MemoryLostStore()
        self.liveness = Liveness(self.store, ME, heartbeat=0.02, ttl=0.1)
        self.runs = Runs()
        self.hooks = LostHooks()
        self.executor = FakeExecutor()
        self.gate = WorkerLost(self.store, self.liveness, self.runs, self.hooks,
                               self.executor, max_redeliveries)
        self.decided: list[tuple[int, bool]] = []

    async def ready(self) -> Rig:
        await self.store.setup()
        return self

    async def next(self, job: Job) -> None:
        self.decided.append(self.runs.pop(job))

    async def admit(self, job: Job) -> None:
        await self.gate(job, self.next)


async def _job(app: App, name: str = "l.work", redelivered: bool = True) -> Job:
    job = await make_job(app, name, redelivered=redelivered)
    assert job.id is not None
    return job


async def test_first_deliveries_and_early_ack_tasks_are_not_looked_at(lost_app: App) -> None:
    rig = await Rig().ready()
    first = await _job(lost_app, redelivered=False)
    early = await _job(lost_app, "l.early")
    for job in (first, early):
        assert job.id is not None
        rig.store.markers[job.id] = Marker(OTHER, 0, True)  # would convict if looked at
        await rig.admit(job)
    assert rig.decided == [(0, False), (0, False)] and rig.executor.finished == []


async def test_redelivered_without_a_marker_never_started_and_runs_normally(
        lost_app: App) -> None:
    rig = await Rig().ready()
    await rig.admit(await _job(lost_app))
    assert rig.decided == [(0, False)] and rig.hooks.calls == []


async def test_a_live_owner_means_a_link_drop_not_a_death(lost_app: App) -> None:
    """The owner keeps refreshing its lease: the task runs as usual, deaths unchanged."""
    rig = await Rig().ready()
    job = await _job(lost_app)
    assert job.id is not None
    rig.store.markers[job.id] = Marker(OTHER, 1, False)
    await rig.store.refresh(OTHER, 1)

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(0.01)
            await rig.store.refresh(OTHER, 1)
    beating = asyncio.create_task(keep_alive())
    try:
        await rig.admit(job)
    finally:
        beating.cancel()
    assert rig.decided == [(1, False)] and rig.hooks.calls == []
    assert rig.store.markers[job.id] == Marker(OTHER, 1, False)


async def test_a_dead_owner_makes_a_suspect_recorded_before_it_runs_isolated(
        lost_app: App) -> None:
    rig = await Rig().ready()
    job = await _job(lost_app)
    assert job.id is not None
    rig.store.markers[job.id] = Marker(OTHER, 0, False)  # no lease: dead

    async def check(job: Job) -> None:
        assert job.id is not None
        # The death is durable before the run: nobody runs it, one death.
        assert rig.store.markers[job.id] == Marker(None, 1, False)
        assert rig.gate.isolation.locked()
        await rig.next(job)
    await rig.gate(job, check)
    assert rig.decided == [(1, True)]
    assert rig.hooks.calls == [(job.id, 1, ISOLATE)]


async def test_a_recorded_suspect_that_comes_back_again_is_not_counted_twice(
        lost_app: App) -> None:
    rig = await Rig().ready()
    job = await _job(lost_app)
    assert job.id is not None
    rig.store.markers[job.id] = Marker(None, 2, False)
    await rig.admit(job)
    assert rig.decided == [(2, True)]


async def test_default_convicts_a_task_that_died_isolated_failure_worker_lost(
        lost_app: App) -> None:
    rig = await Rig().ready()
    job = await _job(lost_app)
    assert job.id is not None
    rig.store.markers[job.id] = Marker(OTHER, 1, True)
    await rig.admit(job)
    assert rig.decided == []
    [(_, outcome)] = rig.executor.finished
    assert outcome.kind == FAILURE and isinstance(outcome.exc, WorkerLostError)
    assert str(outcome.exc).startswith("Worker exited prematurely: ")
    assert job.id not in rig.store.markers
    assert rig.hooks.calls == [(job.id, 2, FAIL)]


@pytest.mark.parametrize(("deaths_before", "dead_lettered"), [(1, False), (2, False),
                                                               (3, True)])
async def test_reject_on_worker_lost_runs_it_again_until_max_then_poison(
        lost_app: App, deaths_before: int, dead_lettered: bool) -> None:
    rig = await Rig(max_redeliveries=3).ready()
    job = await _job(lost_app, "l.reject")
    assert job.id is not None
    rig.store.markers[job.id] = Marker(OTHER, deaths_before, True)
    await rig.admit(job)
    if not dead_lettered:
        assert rig.decided == [(deaths_before + 1, True)] and rig.executor.finished == []
        return
    assert rig.decided == []
    [(_, outcome)] = rig.executor.finished
    assert (outcome.kind, outcome.reason) == (REJECTED, POISON)
    [stored] = rig.executor.stored
    assert stored.state == states.FAILURE and stored.result["exc_type"] == "WorkerLostError"
    assert stored.result["exc_module"] == "billiard.exceptions"
    assert rig.hooks.calls == [(job.id, 4, POISON)]


async def test_suspects_run_one_at_a_time_while_normal_tasks_go_on(lost_app: App) -> None:
    rig = await Rig().ready()
    suspects = [await _job(lost_app) for _ in range(3)]
    for job in suspects:
        assert job.id is not None
        rig.store.markers[job.id] = Marker(None, 1, False)
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()
    inner = Next(hold)
    tasks = [asyncio.create_task(rig.gate(job, inner)) for job in suspects]
    await until(lambda: inner.running == 1)
    normal = Next()
    await rig.gate(await _job(lost_app, redelivered=False), normal)
    assert normal.called  # not held behind the isolated suspect
    release.set()
    await asyncio.gather(*tasks)
    assert inner.peak == 1 and len(inner.jobs) == 3


async def test_an_unreadable_store_runs_the_task_isolated(lost_app: App) -> None:
    class Broken(MemoryLostStore):
        async def get(self, task_id: str) -> Marker | None:
            raise ConnectionError("down")
    rig = await Rig().ready()
    rig.store = rig.gate.store = Broken()
    await rig.admit(await _job(lost_app))
    assert rig.decided == [(0, True)]


# -- liveness --------------------------------------------------------------------------
async def test_liveness_lapsed_or_never_refreshed_lease_is_dead() -> None:
    store = MemoryLostStore()
    live = Liveness(store, ME, heartbeat=0.02, ttl=0.1)
    assert await live.dead("gone@x||1|a")  # no lease at all
    await store.refresh("stuck@x||1|b", 1)  # valid, but never refreshed again
    assert await live.dead("stuck@x||1|b")
    assert not await live.dead(ME)


async def test_liveness_judges_an_owner_once_for_all_its_suspects() -> None:
    live = Liveness(MemoryLostStore(), ME, heartbeat=0.02, ttl=0.1)
    judged: list[str] = []
    judge = live._judge

    async def counting(owner: str) -> bool:
        judged.append(owner)
        return await judge(owner)
    live._judge = counting  # type: ignore[method-assign]
    assert await asyncio.gather(*(live.dead(OTHER) for _ in range(5))) == [True] * 5
    assert await live.dead(OTHER) and judged == [OTHER]


async def test_a_lapsed_lease_refreshed_while_judging_is_alive() -> None:
    """A worker cut off from the database refreshes its lease once it is back."""
    store = MemoryLostStore()
    live = Liveness(store, ME, heartbeat=0.02, ttl=0.1)
    store.leases[OTHER] = 0.0  # lapsed long ago

    async def comes_back() -> None:
        await asyncio.sleep(0.03)
        await store.refresh(OTHER, 0.1)
    back = asyncio.create_task(comes_back())
    assert not await live.dead(OTHER)
    await back


def test_same_namespace_owner_whose_pid_is_gone_or_ours_is_dead_at_once() -> None:
    node, namespace, _, _ = ME.rsplit("|", 3)
    assert namespace, "this test needs /proc"
    assert gone_locally(f"{node}|{namespace}|{os.getpid()}|older", ME)  # restarted in place
    assert gone_locally(f"{node}|{namespace}|{2 ** 22 + 7}|x", ME)  # no such pid
    assert not gone_locally(f"{node}|{namespace}|{os.getppid()}|x", ME)  # alive
    assert not gone_locally(f"{node}|other-ns|{2 ** 22 + 7}|x", ME)  # another host
    assert not gone_locally(ME, ME)
    assert not gone_locally("garbage", ME)


# -- markers -------------------------------------------------------------------------
def test_coalesce_keeps_the_last_operation_per_task() -> None:
    ops = [(START, "a", ME, 0, False), ("release", "a", ME), (START, "a", ME, 2, True),
           (START, "b", ME, 0, False)]
    assert list(coalesce(ops).values()) == [(START, "a", ME, 2, True), (START, "b", ME, 0, False)]


async def test_markers_are_written_at_start_and_released_after() -> None:
    store = MemoryLostStore()
    await store.setup()
    app = App("unit-lost-steps")

    @app.task(name="m.work", acks_late=True)
    async def work() -> None:
        return None
    runs, marked = Runs(), dict[Job, Any]()
    start = MarkStarted(store, ME, runs, marked)
    release = ReleaseMarker(store, runs, marked)
    job = await make_job(app, "m.work")
    assert job.id is not None
    runs.set(job, 2, True)
    seen: list[Marker | None] = []

    async def body(job: Job) -> None:
        assert job.id is not None
        seen.append(await store.get(job.id))
    await start(job, body)
    assert seen == [Marker(f"{ME}#1", 2, True)]
    job.outcome = Outcome(SUCCESS)
    await release.after_store(job)
    await until(lambda: not store.markers)  # released in the background
    await store.close()


async def test_a_runs_release_never_clears_a_later_run_of_the_same_task() -> None:
    """A retry (same task id) may start before the first run's release is written."""
    store = MemoryLostStore()
    await store.setup()
    app = App("unit-lost-retry")

    @app.task(name="m.work", acks_late=True)
    async def work() -> None:
        return None
    runs, marked = Runs(), dict[Job, Any]()
    start, release = MarkStarted(store, ME, runs, marked), ReleaseMarker(store, runs, marked)
    first = await make_job(app, "m.work", task_id="same")
    second = await make_job(app, "m.work", task_id="same")
    retried = asyncio.Event()

    async def body(job: Job) -> None:
        if job is first:
            await start(second, lambda _: retried.wait())
    started = asyncio.create_task(start(first, body))
    await until(lambda: second in marked)
    first.outcome = Outcome(SUCCESS)
    await release.after_store(first)  # written after the retry's start
    retried.set()
    await started
    await store.close()
    assert store.markers["same"] == Marker(f"{ME}#2", 0, False)


async def test_a_requeued_task_releases_its_marker_before_the_message_goes_back() -> None:
    store = MemoryLostStore()
    await store.setup()
    app = App("unit-lost-requeue")

    @app.task(name="m.work", acks_late=True)
    async def work() -> None:
        return None
    runs, marked = Runs(), dict[Job, Any]()
    job = await make_job(app, "m.work")
    assert job.id is not None

    async def body(job: Job) -> None:
        return None
    await MarkStarted(store, ME, runs, marked)(job, body)
    job.outcome = Outcome(CANCELLED)
    await ReleaseMarker(store, runs, marked).after_store(job)
    assert job.id not in store.markers  # already durable: no background wait
    await store.close()


def test_settings_defaults() -> None:
    s = App("unit-lost-settings").settings.section(WorkerLostSettings)
    assert (s.worker_max_redeliveries, s.worker_lost_detection) == (3, True)
    assert s.lease_ttl == s.worker_lost_heartbeat * s.worker_lost_lease_factor




async def test_a_task_does_not_wait_long_for_an_unwritable_marker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Database down: the task runs after START_WAIT; the marker is written later."""
    from asyncworker.worker_lost import steps

    class Stuck(MemoryLostStore):
        def start(self, task_id: str, owner: str, deaths: int, isolated: bool
                  ) -> asyncio.Future[None]:
            return asyncio.get_running_loop().create_future()  # never written
    monkeypatch.setattr(steps, "START_WAIT", 0.05)
    app = App("unit-lost-stuck")

    @app.task(name="m.work", acks_late=True)
    async def work() -> None:
        return None
    marked: dict[Job, Any] = {}
    job = await make_job(app, "m.work")
    body = Next()
    await MarkStarted(Stuck(), ME, Runs(), marked)(job, body)
    assert body.jobs == [job] and marked[job].owner == f"{ME}#1"


async def test_a_requeued_suspect_keeps_its_deaths() -> None:
    """Cold shutdown while a suspect runs: it goes back with its deaths, run by nobody."""
    store = MemoryLostStore()
    await store.setup()
    app = App("unit-lost-requeue-suspect")

    @app.task(name="m.work", acks_late=True)
    async def work() -> None:
        return None
    runs, marked = Runs(), dict[Job, Any]()
    job = await make_job(app, "m.work")
    assert job.id is not None
    runs.set(job, 2, True)
    await MarkStarted(store, ME, runs, marked)(job, Next())
    assert store.markers[job.id] == Marker(f"{ME}#1", 2, True)
    job.outcome = Outcome(CANCELLED)
    await ReleaseMarker(store, runs, marked).after_store(job)
    assert store.markers[job.id] == Marker(None, 2, False)
    await store.close()
