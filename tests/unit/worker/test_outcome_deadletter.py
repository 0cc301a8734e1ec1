"""``DeadLetterFailures`` (``task_dead_letter_on_failure``): a task that failed after its
retries ran out is copied to ``<queue>.dlq``; other outcomes are not."""

from __future__ import annotations

from typing import Any

import pytest

from asyncworker import Task
from asyncworker.deadletter import REASON
from asyncworker.worker.job import FAILURE, RETRY, SUCCESS, Job, Outcome
from asyncworker.worker.outcomes.deadletter import DeadLetterFailures

from .helpers import Kit, RecordingHooks, make_job, task_ids


class _Executor:
    """Records ``keep_dead_letter`` calls."""

    def __init__(self) -> None:
        self.kept: list[tuple[Job, str, BaseException | None]] = []

    async def keep_dead_letter(self, job: Job, reason: str,
                               exc: BaseException | None = None) -> None:
        self.kept.append((job, reason, exc))


@pytest.mark.parametrize(("kind", "retries", "max_retries", "kept"), [
    (FAILURE, 2, 2, True),
    (FAILURE, 3, 2, True),
    (FAILURE, 1, 2, False),
    (FAILURE, 0, 0, False),
    (FAILURE, 5, None, False),
    (SUCCESS, 2, 2, False),
    (RETRY, 2, 2, False),
], ids=["exhausted", "past-limit", "retries-left", "never-retried", "unlimited", "success",
        "retry"])
async def test_only_failures_out_of_retries_are_copied(
        kit: Kit, kind: str, retries: int, max_retries: int | None, kept: bool) -> None:
    """A FAILURE with ``0 < max_retries <= retries`` is copied, with reason "retries
    exhausted" and the exception."""

    @kit.app.task(name="t.limited", max_retries=max_retries)
    async def limited() -> None:
        return None

    executor = _Executor()
    job = await make_job(kit.app, "t.limited", retries=retries)
    exc = ValueError("last")
    job.outcome = Outcome(kind, exc=None if kind == SUCCESS else exc)
    await DeadLetterFailures(executor).after_store(job)  # type: ignore[arg-type]
    assert executor.kept == ([(job, "retries exhausted", exc)] if kept else [])


def _always_retry(kit: Kit) -> Task:
    @kit.app.task(name="t.hopeless", bind=True, max_retries=1)
    async def hopeless(self: Task) -> None:
        raise self.retry(countdown=0, exc=ValueError("still broken"))

    return hopeless


@pytest.mark.parametrize("enabled", [True, False])
async def test_worker_keeps_a_copy_of_finally_failed_tasks(
        kit: Kit, rec: RecordingHooks, enabled: bool) -> None:
    """With the setting on, the last attempt is copied to ``celery.dlq`` (``task_dead_lettered``)
    and its message still acked; with it off, nothing is kept."""
    hopeless = _always_retry(kit)
    async with kit.run([rec], task_dead_letter_on_failure=enabled) as worker:
        result = await hopeless.delay()
        await worker.wait_for(lambda: rec.closed(result.id, 2))
        await worker.idle()
        kept: list[Any] = worker.broker.messages("celery.dlq") if enabled else []
    assert rec.closings(result.id) == ["task_retried", "task_failed"]
    assert task_ids(worker.broker.acked) == [result.id, result.id]
    if enabled:
        assert [(m.headers["id"], m.headers[REASON]) for m in kept] == [
            (result.id, "retries exhausted")]
        assert [c.reason for c in rec.of("task_dead_lettered")] == ["retries exhausted"]
        assert worker.state.counts["dead_lettered"] == 1
    else:
        assert "celery.dlq" not in worker.broker.queues
        assert rec.of("task_dead_lettered") == []
