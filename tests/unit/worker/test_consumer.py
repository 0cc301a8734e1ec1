"""``Consumer``: bad input is rejected (never stops consumption), each good message becomes
a received job with its request, and a warm shutdown hands back what has not started."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from asyncworker.plugins import Plugin
from asyncworker.worker.job import Job
from asyncworker.worker.middleware import CallNext, Middleware

from .helpers import Kit, RecordingHooks, encoded, raw_message, task_ids

GOOD_BODY = b'[[1, 2], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


@pytest.mark.parametrize(("body", "headers", "content_type", "reason"), [
    (b"{not json", {"id": "bad", "task": "t.add"}, "application/json",
     "InvalidTaskError: undecodable body"),
    (GOOD_BODY, {"id": "bad"}, "application/json", "InvalidTaskError: protocol 1 body"),
    (GOOD_BODY, {"task": "t.add"}, "application/json", "InvalidTaskError: missing 'id'"),
    (GOOD_BODY, {"id": "bad", "task": "t.add", "eta": "tomorrow"}, "application/json",
     "InvalidTaskError: invalid eta"),
    (b"\x80\x04N.", {"id": "bad", "task": "t.add"}, "application/x-python-serialize",
     "ContentDisallowed"),
], ids=["undecodable", "no-task-header", "no-id", "bad-eta", "pickle"])
async def test_bad_input_is_rejected_and_the_next_message_runs(
        kit: Kit, rec: RecordingHooks, body: bytes, headers: dict[str, Any],
        content_type: str, reason: str) -> None:
    """A message that cannot become a task is rejected for good (``task_rejected``, never
    received), and the message after it is processed as usual."""
    async with kit.run([rec], task_dead_letter=False) as worker:
        await worker.broker.publish("", "celery", raw_message(
            body, headers, content_type=content_type, task_id="bad"))
        good = await kit.add.delay(2, 3)
        assert await worker.result(good.id) == 5
        await worker.wait_for(lambda: worker.broker.rejected)
    assert [(d.headers.get("id"), requeue) for d, requeue in worker.broker.rejected] == [
        (headers.get("id"), False)]
    rejected = rec.of("task_rejected")
    assert len(rejected) == 1 and rejected[0].reason.startswith(reason)
    assert rejected[0].task_id == "bad"
    assert [c.task_id for c in rec.of("task_received")] == [good.id]


async def test_unknown_task_is_refused_and_consumption_goes_on(
        kit: Kit, rec: RecordingHooks) -> None:
    """An unregistered task name is rejected; the next message runs."""
    async with kit.run([rec], task_dead_letter=False) as worker:
        unknown = await kit.app.send_task("t.nobody")
        good = await kit.add.delay(1, 1)
        assert await worker.result(good.id) == 2
        await worker.wait_for(lambda: rec.closed(unknown.id))
    assert rec.closings(unknown.id) == ["task_rejected"]
    assert task_ids(worker.broker.rejected) == [unknown.id]


class _Exploding:
    """Admission middleware with a bug, for one task id."""

    async def __call__(self, job: Job, call_next: CallNext) -> None:
        if job.id == "cursed":
            raise RuntimeError("bug in a plugin")
        await call_next(job)


class _BuggyPlugin(Plugin):
    name = "buggy"

    def admission(self, worker: Any) -> Iterable[Middleware]:
        return [_Exploding()]


async def test_an_internal_error_rejects_that_message_only(
        kit: Kit, rec: RecordingHooks) -> None:
    """A bug while handling one message rejects it (REJECTED, "internal error") once; the
    consumer carries on."""
    kit.app.use(_BuggyPlugin())
    async with kit.run([rec], task_dead_letter=False) as worker:
        await kit.add.apply_async((1, 1), task_id="cursed")
        good = await kit.add.delay(2, 2)
        assert await worker.result(good.id) == 4
        await worker.wait_for(lambda: rec.closed("cursed"))
    assert rec.closings("cursed") == ["task_rejected"]
    assert rec.of("task_rejected")[0].reason.startswith("internal error: RuntimeError")
    assert task_ids(worker.broker.rejected) == ["cursed"]
    rec.assert_one_closing_per_job()


async def test_received_job_has_its_request(kit: Kit, rec: RecordingHooks) -> None:
    """The request carries the delivery's route and the effective ``ignore_result`` (the
    message's, else the task's option)."""

    @kit.app.task(name="t.quiet", ignore_result=True)
    async def quiet() -> None:
        return None

    async with kit.run([rec]) as worker:
        loud = await kit.add.delay(1, 2)
        silenced = await kit.add.apply_async((1, 2), ignore_result=True)
        by_option = await quiet.delay()
        await worker.wait_for(lambda: len(rec.closings()) == 3)
    requests = {c.task_id: c.job.request for c in rec.of("task_received") if c.job}
    assert {k: r.ignore_result for k, r in requests.items() if r} == {
        loud.id: False, silenced.id: True, by_option.id: True}
    info = requests[loud.id].delivery_info  # type: ignore[union-attr]
    assert (info["exchange"], info["routing_key"], info["redelivered"]) == ("", "celery", False)
    assert list(worker.backend.results) == [loud.id]


async def test_warm_shutdown_requeues_jobs_not_started(kit: Kit, rec: RecordingHooks) -> None:
    """On a warm shutdown reserved and scheduled jobs are cancelled (``task_cancelled``) and
    requeued, while the running task finishes and is acked."""
    async with kit.run([rec], worker_concurrency=1) as worker:
        running = await kit.block.delay("done")
        reserved = await kit.add.delay(1, 1)
        scheduled = await kit.add.apply_async((2, 2), countdown=10)
        await worker.wait_for(lambda: kit.gate.entered and worker.state.reserved
                              and worker.state.scheduled)
        worker.worker.request_stop()
        await worker.wait_for(lambda: rec.closed(reserved.id) and rec.closed(scheduled.id))
        assert not rec.closed(running.id)
        kit.gate.open()
        assert await worker.result(running.id) == "done"
    assert rec.closings(reserved.id) == rec.closings(scheduled.id) == ["task_cancelled"]
    assert sorted((d.headers["id"], r) for d, r in worker.broker.rejected) == sorted(
        [(reserved.id, True), (scheduled.id, True)])
    assert sorted(m.headers["id"] for m in worker.broker.messages("celery")) == sorted(
        [reserved.id, scheduled.id])
    assert task_ids(worker.broker.acked) == [running.id]
    assert kit.runs == [running.id]
    assert worker.state.reserved == set() and worker.state.scheduled == set()


async def test_message_arriving_while_stopping_is_requeued(kit: Kit,
                                                           rec: RecordingHooks) -> None:
    """A delivery handed over after the stop began goes straight back, unprocessed."""
    async with kit.run([rec]) as worker:
        await worker.broker.cancel_consumers()  # hand it over ourselves, below
        await worker.broker.publish("", "celery", encoded("t.add", (1, 2), task_id="late"))
        delivery = await worker.broker.get("celery")
        assert delivery is not None
        consumer = worker.worker.consumer
        consumer.stopping = True
        await consumer.on_message(delivery)
        assert not consumer.handlers
    assert [(d.headers["id"], r) for d, r in worker.broker.rejected] == [("late", True)]
    assert worker.broker.messages("celery")[0].headers["id"] == "late"
    assert rec.points("late") == []
