"""Hooks: exactly one closing hook per received job, whatever the outcome; refused
messages get ``task_rejected``; ``HookSet`` calls only what a subscriber overrides and
survives a subscriber that raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from asyncworker import Ignore, NotRegistered, Reject, Task, states
from asyncworker.hooks import CLOSING, HookSet, WorkerHooks
from asyncworker.testing import TestWorker
from asyncworker.worker.job import Job

from .helpers import Kit, RecordingHooks, make_job, raw_message

Scenario = Callable[[Kit, TestWorker], Awaitable[Any]]


def _extra_tasks(kit: Kit) -> None:
    @kit.app.task(name="t.retry_once", bind=True)
    async def retry_once(self: Task) -> str:
        if not self.request.retries:
            raise self.retry(countdown=0)
        return "again"

    @kit.app.task(name="t.reject")
    async def reject() -> None:
        raise Reject("no", requeue=False)

    @kit.app.task(name="t.ignore")
    async def ignore() -> None:
        raise Ignore()


async def _revoked(kit: Kit, worker: TestWorker) -> Any:
    worker.state.revoked.add("revoked-id")
    return await kit.add.apply_async((1, 2), task_id="revoked-id")


async def _expired(kit: Kit, worker: TestWorker) -> Any:
    return await kit.add.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(1))


async def _cancelled(kit: Kit, worker: TestWorker) -> Any:
    result = await kit.block.delay()
    await worker.wait_for(lambda: kit.gate.entered)
    worker.worker.request_stop(cold=True)
    return result


SCENARIOS: dict[str, tuple[Scenario, list[str]]] = {
    "success": (lambda kit, w: kit.add.delay(1, 2), ["task_succeeded"]),
    "failure": (lambda kit, w: kit.fail.delay(), ["task_failed"]),
    "retry": (lambda kit, w: kit.app.send_task("t.retry_once"),
              ["task_retried", "task_succeeded"]),
    "reject": (lambda kit, w: kit.app.send_task("t.reject"), ["task_rejected"]),
    "ignore": (lambda kit, w: kit.app.send_task("t.ignore"), ["task_ignored"]),
    "revoked": (_revoked, ["task_revoked"]),
    "expired": (_expired, ["task_expired"]),
    "cancelled": (_cancelled, ["task_cancelled"]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_exactly_one_closing_hook_per_received_job(
        kit: Kit, rec: RecordingHooks, name: str) -> None:
    """Each received job closes once, with the hook its outcome names, after
    ``task_received``; the state's counters follow the same hooks."""
    _extra_tasks(kit)
    send, expected = SCENARIOS[name]
    async with kit.run([rec]) as worker:
        result = await send(kit, worker)
        await worker.wait_for(lambda: rec.closed(result.id, len(expected)))
        await worker.idle()
    assert rec.closings(result.id) == expected
    rec.assert_one_closing_per_job()
    points = rec.points(result.id)
    assert len(rec.of("task_received", result.id)) == len(expected)
    assert points[0] == "task_received"
    assert sum(worker.state.counts[p.removeprefix("task_")] for p in CLOSING) == len(expected)


async def test_started_comes_between_received_and_the_closing_hook(
        kit: Kit, rec: RecordingHooks) -> None:
    """A task that runs: received, started, then its closing hook, in that order."""
    async with kit.run([rec]) as worker:
        result = await kit.add.delay(1, 2)
        await worker.result(result.id)
        await worker.idle()
    assert rec.points(result.id) == ["task_received", "task_started", "task_succeeded"]
    assert rec.points()[0] == "worker_ready"


async def test_undecodable_message_is_rejected_without_being_received(
        kit: Kit, rec: RecordingHooks) -> None:
    """A body that cannot be decoded: ``task_rejected`` with ``job.message`` None, no
    ``task_received``, and the message kept as a dead letter."""
    async with kit.run([rec]) as worker:
        await worker.broker.publish("", "celery", raw_message(
            b"{not json", {"id": "garbled", "task": "t.add"}, task_id="garbled"))
        await worker.wait_for(lambda: rec.closed("garbled"))
        await worker.idle()
    assert rec.points("garbled") == ["task_rejected", "task_dead_lettered"]
    job = rec.of("task_rejected")[0].job
    assert job is not None and job.message is None and job.request is None
    assert rec.of("task_rejected")[0].reason.startswith("InvalidTaskError")
    assert worker.backend.history == []


async def test_unknown_task_is_rejected_with_not_registered_stored(
        kit: Kit, rec: RecordingHooks) -> None:
    """An unregistered name: FAILURE ``NotRegistered`` stored, ``task_rejected``, no
    ``task_received``."""
    async with kit.run([rec]) as worker:
        result = await kit.app.send_task("t.nobody", (1,))
        stored = await worker.stored(result.id)
        await worker.wait_for(lambda: rec.closed(result.id))
        await worker.idle()
    assert stored.state == states.FAILURE
    assert stored.result["exc_type"] == NotRegistered.__name__
    assert rec.points(result.id) == ["task_rejected", "task_dead_lettered"]
    assert rec.of("task_rejected")[0].reason == "unknown task 't.nobody'"


async def test_app_hooks_and_worker_hooks_both_hear(kit: Kit, rec: RecordingHooks) -> None:
    """Hooks added with ``app.add_hooks`` are subscribed to the worker beside its own."""
    app_rec = RecordingHooks()
    kit.app.add_hooks(app_rec)
    async with kit.run([rec]) as worker:
        result = await kit.add.delay(1, 2)
        await worker.result(result.id)
        await worker.idle()
    assert app_rec.points(result.id) == rec.points(result.id) == [
        "task_received", "task_started", "task_succeeded"]


# -- HookSet -------------------------------------------------------------------------
class _OnlySucceeded(WorkerHooks):
    def __init__(self) -> None:
        self.seen: list[Job] = []

    def task_succeeded(self, job: Job) -> None:
        self.seen.append(job)


class _Raising(WorkerHooks):
    def task_succeeded(self, job: Job) -> None:
        raise RuntimeError("observer broke")

    def task_received(self, job: Job) -> None:
        raise RuntimeError("observer broke")


async def test_hookset_calls_only_overridden_methods(
        kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A point a subscriber does not override is never called on it (not even the base's)."""
    base_calls: list[str] = []
    only = _OnlySucceeded()
    hooks = HookSet([only])
    monkeypatch.setattr(WorkerHooks, "task_failed",
                        lambda self, job: base_calls.append("task_failed"))
    job = await make_job(kit.app, "t.add", (1, 2))
    hooks.task_failed(job)
    hooks.task_succeeded(job)
    assert base_calls == [] and only.seen == [job]


async def test_hookset_forwards_every_point(kit: Kit) -> None:
    """Every point of ``WorkerHooks`` reaches a subscriber that overrides it, with its
    arguments."""
    rec = RecordingHooks()
    hooks = HookSet([rec])
    job = await make_job(kit.app, "t.add", (1, 2))
    hooks.worker_ready(object())
    hooks.worker_stopping(object(), cold=True)
    for point in ("task_received", "task_started", *CLOSING):
        getattr(hooks, point)(job)
    hooks.task_dead_lettered(job, "why")
    assert rec.points() == ["worker_ready", "worker_stopping", "task_received",
                            "task_started", *CLOSING, "task_dead_lettered"]
    assert rec.calls[1].reason == "cold" and rec.calls[-1].reason == "why"


async def test_hookset_survives_a_raising_subscriber(kit: Kit) -> None:
    """A subscriber that raises is logged; the call returns and later subscribers hear it."""
    after = _OnlySucceeded()
    hooks = HookSet([_Raising(), after])
    job = await make_job(kit.app, "t.add", (1, 2))
    hooks.task_succeeded(job)
    assert after.seen == [job]


async def test_worker_survives_a_raising_subscriber(kit: Kit, rec: RecordingHooks) -> None:
    """In a worker, a raising hook changes nothing: the task runs, stores and is acked."""
    async with kit.run([_Raising(), rec]) as worker:
        result = await kit.add.delay(1, 2)
        assert await worker.result(result.id) == 3
        await worker.wait_for(lambda: worker.broker.acked)
    assert rec.points(result.id) == ["task_received", "task_started", "task_succeeded"]
