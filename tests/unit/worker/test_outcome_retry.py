"""``RetryStep``: ``autoretry_for`` turns a failure into a retry before the store; after
the store a retry is published (same id, ``retries + 1``, back where it came from), and
one that cannot be published fails the task."""

from __future__ import annotations

from typing import Any

import pytest

from asyncworker import MaxRetriesExceededError, Retry, Task, protocol, serialization, states
from asyncworker.backends.base import format_traceback
from asyncworker.broker.memory import MemoryBroker
from asyncworker.protocol import OutgoingMessage
from asyncworker.worker.job import FAILURE, RETRY, Job, Outcome
from asyncworker.worker.outcomes.retry import RetryStep

from .helpers import Kit, RecordingHooks, make_job, task_ids


class _FlakyBroker(MemoryBroker):
    """Refuses the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, exchange: str, routing_key: str, message: OutgoingMessage) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        await super().publish(exchange, routing_key, message)


def _autoretrying(kit: Kit, **options: Any) -> None:
    class Boom(ValueError):
        pass

    options.setdefault("autoretry_for", (ValueError,))
    options.setdefault("retry_kwargs", {"countdown": 0})

    @kit.app.task(name="t.auto", **options)
    async def auto(kind: str = "value") -> None:
        raise Boom("special") if kind == "boom" else ValueError("flaky")

    kit.app.state.Boom = Boom


def _failed(job: Job, exc: Exception, reason: str = "") -> Job:
    job.outcome = Outcome(FAILURE, exc=exc, traceback=format_traceback(exc), reason=reason)
    return job


async def test_autoretried_failure_becomes_a_retry(kit: Kit) -> None:
    """A FAILURE whose exception is in ``autoretry_for`` becomes RETRY, keeping the cause."""
    _autoretrying(kit)
    exc = ValueError("flaky")
    job = _failed(await make_job(kit.app, "t.auto"), exc)
    await RetryStep(MemoryBroker()).before_store(job)
    assert job.outcome is not None and job.outcome.kind == RETRY
    assert job.outcome.exc is exc and isinstance(job.outcome.retry, Retry)


@pytest.mark.parametrize(("case", "options", "retries", "exc", "reason"), [
    ("not listed", {}, 0, KeyError("other"), ""),
    ("dont_autoretry_for", {"dont_autoretry_for": (KeyError,)}, 0, KeyError("k"), ""),
    ("exhausted", {"max_retries": 2}, 2, ValueError("flaky"), ""),
    ("publish failed", {}, 0, ValueError("flaky"), "retry could not be published"),
])
async def test_other_failures_stand(kit: Kit, case: str, options: dict[str, Any],
                                    retries: int, exc: Exception, reason: str) -> None:
    """Not listed, excluded, out of retries, or already a failed retry: FAILURE stays."""
    autoretry_for = (ValueError, KeyError) if case == "dont_autoretry_for" else (ValueError,)
    _autoretrying(kit, autoretry_for=autoretry_for, **options)
    job = _failed(await make_job(kit.app, "t.auto", retries=retries), exc, reason)
    before = job.outcome
    await RetryStep(MemoryBroker()).before_store(job)
    assert job.outcome is before and before is not None and before.exc is exc


async def test_retry_is_published_back_where_it_came_from(kit: Kit) -> None:
    """After the store the retry goes to the delivery's exchange and routing key: same id,
    ``retries + 1``, the ETA asked for; the outcome stays RETRY."""
    broker = MemoryBroker()
    job = await make_job(kit.app, "t.add", (1, 2), broker=broker, queue="work", retries=1)
    retry = Retry(exc=ValueError("x"), when=None, args=[5, 6])
    job.outcome = Outcome(RETRY, exc=retry.exc, retry=retry)
    await RetryStep(broker).after_store(job)
    assert job.outcome.kind == RETRY
    exchange, routing_key, sent = broker.published[-1]
    assert (exchange, routing_key) == ("", "work")
    again = protocol.decode(sent.body, sent.headers, sent.content_type, sent.content_encoding,
                            serialization.accepted(["json"]))
    assert (again.id, again.task, again.retries, again.args) == (job.id, "t.add", 2, [5, 6])
    assert again.eta is not None


async def test_unpublishable_retry_fails_the_task(kit: Kit) -> None:
    """A retry the broker will not take (within the timeout) becomes FAILURE with the
    publish error, reason "retry could not be published"."""
    broker = _FlakyBroker(failures=10)
    job = await make_job(kit.app, "t.add", (1, 2), broker=MemoryBroker())
    retry = Retry(exc=ValueError("x"), when=None)
    job.outcome = Outcome(RETRY, exc=retry.exc, retry=retry)
    await RetryStep(broker, publish_timeout=0).after_store(job)
    assert job.outcome.kind == FAILURE
    assert job.outcome.reason == "retry could not be published"
    assert isinstance(job.outcome.exc, ConnectionError)


async def test_publish_is_retried_within_the_timeout(kit: Kit) -> None:
    """One refused publish is tried again; the retry is then published once."""
    broker = _FlakyBroker(failures=1)
    job = await make_job(kit.app, "t.add", (1, 2), broker=MemoryBroker())
    retry = Retry(exc=None, when=None)
    job.outcome = Outcome(RETRY, exc=retry, retry=retry)
    await RetryStep(broker, publish_timeout=5).after_store(job)
    assert job.outcome.kind == RETRY and len(broker.published) == 1


# -- in a worker ---------------------------------------------------------------------
async def test_retries_then_succeeds(kit: Kit, rec: RecordingHooks) -> None:
    """``self.retry`` twice, then success: RETRY, RETRY, SUCCESS stored in that order; each
    attempt closes once, and sees its ``retries`` count."""
    attempts: list[int] = []

    @kit.app.task(name="t.third_time", bind=True)
    async def third_time(self: Task) -> str:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return "done"

    async with kit.run([rec]) as worker:
        result = await third_time.delay()
        assert await worker.result(result.id) == "done"
        await worker.idle()
    assert attempts == [0, 1, 2]
    assert [s for _, s in worker.backend.history] == [states.RETRY, states.RETRY,
                                                      states.SUCCESS]
    assert rec.closings(result.id) == ["task_retried", "task_retried", "task_succeeded"]
    rec.assert_one_closing_per_job()
    assert len(worker.broker.acked) == 3


async def test_exhausted_retries_fail(kit: Kit, rec: RecordingHooks) -> None:
    """Past ``max_retries``: ``MaxRetriesExceededError`` (or the ``exc`` given) is stored."""

    @kit.app.task(name="t.always", bind=True, max_retries=1)
    async def always(self: Task, with_exc: bool) -> None:
        raise self.retry(countdown=0, exc=KeyError("given") if with_exc else None)

    async with kit.run([rec]) as worker:
        plain = await always.delay(False)
        given = await always.delay(True)
        stored = {i: await worker.stored(i) for i in (plain.id, given.id)}
        await worker.idle()
    assert stored[plain.id].result["exc_type"] == MaxRetriesExceededError.__name__
    assert stored[given.id].result["exc_type"] == "KeyError"
    for task_id in (plain.id, given.id):
        assert rec.closings(task_id) == ["task_retried", "task_failed"]


async def test_autoretry_in_a_worker(kit: Kit, rec: RecordingHooks) -> None:
    """``autoretry_for``: retried up to ``max_retries``, then the task's own error stands."""
    _autoretrying(kit, max_retries=2)
    async with kit.run([rec]) as worker:
        result = await kit.app.send_task("t.auto")
        with pytest.raises(ValueError, match="flaky"):
            await worker.result(result.id)
        await worker.idle()
    assert [s for _, s in worker.backend.history] == [states.RETRY, states.RETRY,
                                                      states.FAILURE]
    assert rec.closings(result.id) == ["task_retried", "task_retried", "task_failed"]


async def test_unpublishable_retry_in_a_worker_is_a_failure(
        kit: Kit, rec: RecordingHooks, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the retry cannot be published the task fails (``task_failed``, FAILURE stored
    after RETRY) instead of being lost."""

    @kit.app.task(name="t.once", bind=True)
    async def once(self: Task) -> None:
        raise self.retry(countdown=0)

    async with kit.run([rec], task_publish_retry_timeout=0) as worker:
        publish = worker.broker.publish

        async def refuse_retries(exchange: str, key: str, message: OutgoingMessage) -> None:
            if message.headers.get("retries"):
                raise ConnectionError("broker away")
            await publish(exchange, key, message)

        monkeypatch.setattr(worker.broker, "publish", refuse_retries)
        result = await once.delay()
        stored = await worker.stored(result.id)
        await worker.idle()
    assert stored.state == states.FAILURE and stored.result["exc_type"] == "ConnectionError"
    assert [s for _, s in worker.backend.history] == [states.RETRY, states.FAILURE]
    assert [(c.point, c.reason) for c in rec.of("task_failed")] == [
        ("task_failed", "retry could not be published")]
    assert rec.closings(result.id) == ["task_failed"]
    assert task_ids(worker.broker.acked) == [result.id]
