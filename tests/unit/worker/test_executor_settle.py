"""``Executor``: what is stored and how the message is settled for each outcome (early /
late ack, ``acks_on_failure_or_timeout``, results that cannot be stored, ``Reject``,
``Ignore``, interrupted tasks)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from asyncworker import Ignore, Reject, Task, states
from asyncworker.backends.base import TaskOutcome
from asyncworker.deadletter import REASON

from .helpers import Kit, RecordingHooks, task_ids


def _settled(worker: Any, task_id: str) -> tuple[bool, bool]:
    """(acked, rejected) for ``task_id`` so far."""
    ids = worker.broker.settled_ids()
    return task_id in ids["acked"], task_id in ids["rejected"]


def _dead_letters(worker: Any) -> list[tuple[str, str]]:
    """(task id, reason) of the copies kept in ``celery.dlq``."""
    if "celery.dlq" not in worker.broker.queues:
        return []
    return [(m.headers["id"], m.headers[REASON]) for m in worker.broker.messages("celery.dlq")]


@pytest.mark.parametrize(("settings", "options", "early"), [
    ({}, {}, True),
    ({"task_acks_late": True}, {}, False),
    ({}, {"acks_late": True}, False),
    ({"task_acks_late": True}, {"acks_late": False}, True),
], ids=["default", "setting", "task-option", "option-over-setting"])
async def test_early_ack_before_the_body_late_ack_after_the_store(
        kit: Kit, rec: RecordingHooks, settings: dict[str, Any], options: dict[str, Any],
        early: bool) -> None:
    """Early ack: acked while the body runs. Late ack: not until the result is stored, and
    observers hear of it before the ack."""

    @kit.app.task(name="t.held", **options)
    async def held() -> str:
        await kit.gate.wait("held")
        return "ok"

    async with kit.run([rec], **settings) as worker:
        rec.probe = lambda point, job: (job.id in worker.backend.results,
                                        _settled(worker, str(job.id))[0])
        result = await held.delay()
        await worker.wait_for(lambda: kit.gate.entered)
        assert _settled(worker, result.id) == (early, False)
        kit.gate.open()
        assert await worker.result(result.id) == "ok"
        await worker.wait_for(lambda: _settled(worker, result.id)[0])
    succeeded = rec.of("task_succeeded")[0]
    assert succeeded.job is not None and succeeded.job.acked_early is early
    assert succeeded.probe == (True, early)  # stored; acked only if it was early


@pytest.mark.parametrize(("acks_late", "on_failure_ack", "dead_letter", "expected"), [
    (True, True, True, "acked"),
    (False, True, True, "acked"),
    (True, False, False, "rejected"),
    (True, False, True, "dead-lettered"),
    (False, False, True, "copied"),
])
async def test_failure_is_acked_or_dead_lettered_by_acks_on_failure_or_timeout(
        kit: Kit, rec: RecordingHooks, acks_late: bool, on_failure_ack: bool,
        dead_letter: bool, expected: str) -> None:
    """A failure is acked by default; with ``acks_on_failure_or_timeout=False`` it is
    rejected for good (kept in ``celery.dlq`` unless ``task_dead_letter`` is off; an
    early-acked one is copied there)."""
    async with kit.run([rec], task_acks_late=acks_late,
                       task_acks_on_failure_or_timeout=on_failure_ack,
                       task_dead_letter=dead_letter) as worker:
        result = await kit.fail.delay()
        stored = await worker.stored(result.id)
        await worker.idle()
    assert stored.state == states.FAILURE
    assert rec.closings(result.id) == ["task_failed"]
    kept = [(result.id, "task failed")] if expected in ("dead-lettered", "copied") else []
    assert _dead_letters(worker) == kept
    assert [c.reason for c in rec.of("task_dead_lettered")] == [r for _, r in kept]
    if expected == "rejected":
        assert [(d.headers["id"], requeue) for d, requeue in worker.broker.rejected] == [
            (result.id, False)]
    else:
        assert task_ids(worker.broker.acked) == [result.id] and worker.broker.rejected == []


@pytest.mark.parametrize("acks_late", [True, False], ids=["late", "early"])
async def test_result_not_stored_is_dead_lettered_and_failed(
        kit: Kit, rec: RecordingHooks, monkeypatch: pytest.MonkeyPatch, acks_late: bool) -> None:
    """When the SUCCESS cannot be written, observers hear ``task_failed`` and the message is
    kept as a dead letter ("result could not be stored"), never silently acked."""
    async with kit.run([rec], task_acks_late=acks_late) as worker:
        store = worker.backend.store

        async def refuse_success(outcome: TaskOutcome) -> None:
            if outcome.state == states.SUCCESS:
                raise ConnectionError("database down")
            await store(outcome)

        monkeypatch.setattr(worker.backend, "store", refuse_success)
        result = await kit.add.delay(1, 2)
        await worker.wait_for(lambda: rec.closed(result.id))
        await worker.idle()
    assert rec.closings(result.id) == ["task_failed"]
    failed = rec.of("task_failed")[0].job
    assert failed is not None and failed.outcome is not None
    assert type(failed.outcome.exc).__name__ == "ResultNotStored"
    assert failed.outcome.stored is False
    assert _dead_letters(worker) == [(result.id, "result could not be stored")]
    assert result.id not in worker.backend.results
    assert worker.state.counts["failed"] == 1 and worker.state.counts["succeeded"] == 0


async def test_result_not_stored_without_dead_letter_queue_is_rejected(
        kit: Kit, rec: RecordingHooks, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``task_dead_letter`` off a late-ack message whose result is lost is rejected."""
    async with kit.run([rec], task_acks_late=True, task_dead_letter=False) as worker:

        async def refuse(outcome: TaskOutcome) -> None:
            raise ConnectionError("database down")

        monkeypatch.setattr(worker.backend, "store", refuse)
        result = await kit.add.delay(1, 2)
        await worker.wait_for(lambda: worker.broker.rejected)
    assert [(d.headers["id"], requeue) for d, requeue in worker.broker.rejected] == [
        (result.id, False)]
    assert worker.broker.acked == []


async def test_unencodable_result_stores_the_error_and_is_a_failure(
        kit: Kit, rec: RecordingHooks) -> None:
    """A value the result serializer cannot encode: the encoding error is stored as FAILURE,
    and observers hear ``task_failed``, matching what clients will read."""

    @kit.app.task(name="t.opaque")
    async def opaque() -> object:
        return object()

    async with kit.run([rec]) as worker:
        result = await opaque.delay()
        stored = await worker.stored(result.id)
        await worker.idle()
    assert (stored.state, stored.result["exc_type"]) == (states.FAILURE, "ResultEncodeError")
    assert rec.closings(result.id) == ["task_failed"]
    assert worker.state.counts["succeeded"] == 0
    assert task_ids(worker.broker.acked) == [result.id]


async def test_reject_with_requeue_is_delivered_again(kit: Kit, rec: RecordingHooks) -> None:
    """``Reject(requeue=True)`` of a late-ack task: rejected with requeue, delivered again
    flagged redelivered (as in Celery, requeueing needs ``acks_late``)."""

    @kit.app.task(name="t.picky", bind=True, acks_late=True)
    async def picky(self: Task) -> str:
        if not self.request.delivery_info["redelivered"]:
            raise Reject("not yet", requeue=True)
        return "second time"

    async with kit.run([rec]) as worker:
        result = await picky.delay()
        assert await worker.result(result.id) == "second time"
        await worker.idle()
    assert rec.closings(result.id) == ["task_rejected", "task_succeeded"]
    assert [(d.headers["id"], requeue) for d, requeue in worker.broker.rejected] == [
        (result.id, True)]
    assert worker.backend.history == [(result.id, states.SUCCESS)]
    rec.assert_one_closing_per_job()


async def test_reject_with_requeue_after_early_ack_is_published_again(
        kit: Kit, rec: RecordingHooks) -> None:
    """``Reject(requeue=True)`` of an early-acked task: Celery loses the message (the
    reject comes after the ack); here it is published again and runs a second time."""

    @kit.app.task(name="t.early_picky", bind=True)
    async def picky(self: Task) -> int:
        kit.runs.append(self.request.id)
        if len(kit.runs) == 1:
            raise Reject("not yet", requeue=True)
        return len(kit.runs)

    async with kit.run([rec]) as worker:
        result = await picky.delay()
        assert await worker.result(result.id) == 2
        await worker.idle()
    assert rec.closings(result.id) == ["task_rejected", "task_succeeded"]
    assert worker.broker.rejected == []  # acked early: nothing to reject
    assert [m.headers["id"] for _, _, m in worker.broker.published] == [result.id] * 2


@pytest.mark.parametrize("acks_late", [True, False], ids=["late", "early"])
async def test_reject_without_requeue_is_dead_lettered(
        kit: Kit, rec: RecordingHooks, acks_late: bool) -> None:
    """``Reject(requeue=False)``: ``task_rejected``, nothing stored, kept in ``celery.dlq``."""

    @kit.app.task(name="t.refuse")
    async def refuse() -> None:
        raise Reject("bad input", requeue=False)

    async with kit.run([rec], task_acks_late=acks_late) as worker:
        result = await refuse.delay()
        await worker.wait_for(lambda: rec.closed(result.id))
        await worker.idle()
    assert [(c.point, c.reason) for c in rec.of("task_rejected")] == [
        ("task_rejected", "task raised Reject('bad input')")]
    assert _dead_letters(worker) == [(result.id, "task raised Reject('bad input')")]
    assert worker.backend.history == []
    assert worker.broker.rejected == []  # the original is acked once the copy is kept


async def test_ignore_acks_and_stores_nothing(kit: Kit, rec: RecordingHooks) -> None:
    """``Ignore``: acked (also when late-ack), nothing stored, ``task_ignored``."""

    @kit.app.task(name="t.skip", acks_late=True)
    async def skip() -> None:
        raise Ignore()

    async with kit.run([rec]) as worker:
        result = await skip.delay()
        await worker.wait_for(lambda: _settled(worker, result.id)[0])
    assert rec.closings(result.id) == ["task_ignored"]
    assert worker.backend.history == []


@pytest.mark.parametrize(("task_name", "store_errors", "history"), [
    ("t.add", False, []),
    ("t.fail", False, []),
    ("t.fail", True, [states.FAILURE]),
])
async def test_ignore_result_stores_only_errors_when_asked(
        kit: Kit, rec: RecordingHooks, task_name: str, store_errors: bool,
        history: list[str]) -> None:
    """``ignore_result``: nothing stored unless ``store_errors_even_if_ignored`` and it
    failed; the message is acked either way."""
    async with kit.run([rec], task_store_errors_even_if_ignored=store_errors) as worker:
        result = await kit.app.send_task(task_name, (1, 2) if task_name == "t.add" else (),
                                         ignore_result=True)
        await worker.wait_for(lambda: _settled(worker, result.id)[0])
    assert [s for _, s in worker.backend.history] == history
    assert len(rec.closings(result.id)) == 1


async def test_track_started_stores_started_first(kit: Kit, rec: RecordingHooks) -> None:
    """``track_started``: STARTED (with the worker's hostname) is stored before SUCCESS."""
    seen: list[str | None] = []

    @kit.app.task(name="t.tracked", bind=True, track_started=True)
    async def tracked(self: Task) -> None:
        stored = worker.backend.results.get(self.request.id)
        seen.append(stored.state if stored else None)

    async with kit.run([rec]) as worker:
        result = await tracked.delay()
        await worker.result(result.id)
    assert seen == [states.STARTED]
    assert [s for _, s in worker.backend.history] == [states.STARTED, states.SUCCESS]


@pytest.mark.parametrize("plain", [False, True], ids=["coroutine", "thread"])
@pytest.mark.parametrize("acks_late", [True, False], ids=["late", "early"])
async def test_cold_shutdown_gives_a_running_task_back(
        kit: Kit, rec: RecordingHooks, acks_late: bool, plain: bool) -> None:
    """A running task cancelled by a cold shutdown: ``task_cancelled``; a late-ack message is
    requeued, an early-acked one published again, so neither is lost (a plain ``def`` task's
    thread is abandoned, its message handled the same way)."""
    release = threading.Event()

    @kit.app.task(name="t.stuck")
    def stuck() -> None:
        kit.gate.entered.append("stuck")
        release.wait(5)

    try:
        async with kit.run([rec], task_acks_late=acks_late) as worker:
            result = await (stuck.delay() if plain else kit.block.delay())
            await worker.wait_for(lambda: kit.gate.entered)
            worker.worker.request_stop(cold=True)
            await worker.wait_for(lambda: rec.closed(result.id))
            await worker.idle()
    finally:
        release.set()
    assert rec.closings(result.id) == ["task_cancelled"]
    assert worker.backend.history == []
    republished = [m.headers["id"] for _, _, m in worker.broker.published[1:]]
    waiting = [m.headers["id"] for m in worker.broker.messages("celery")]
    if acks_late:
        assert [(d.headers["id"], r) for d, r in worker.broker.rejected] == [(result.id, True)]
        assert republished == []
    else:
        assert task_ids(worker.broker.acked) == [result.id]
        assert republished == [result.id]
    assert waiting == [result.id]
