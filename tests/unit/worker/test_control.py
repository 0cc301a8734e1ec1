"""Remote-control commands in an in-process worker, and their pure parts."""

from __future__ import annotations

import asyncio
import json

import pytest

from asyncworker.control import describe
from asyncworker.control.clock import LamportClock
from asyncworker.control.pidbox import NO_REPLY, Mailbox
from asyncworker.control.revoked import revoking_stamp
from asyncworker.settings import Settings
from asyncworker.testing import TestWorker
from asyncworker.worker.admission.slot import ResizableSemaphore

from .helpers import Kit


def mailbox(worker: TestWorker) -> Mailbox:
    return next(s for s in worker.worker.services if isinstance(s, Mailbox))


# -- pure parts ---------------------------------------------------------------------
async def test_resizable_semaphore_grows_and_shrinks_in_order() -> None:
    sem = ResizableSemaphore(1)
    await sem.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await sem.acquire()
        order.append(i)

    waiters = [asyncio.create_task(take(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == [] and sem.locked()
    sem.resize(3)  # two more slots: the first two waiters, in arrival order
    await asyncio.sleep(0)
    assert order == [0, 1] and sem.in_use == 3
    sem.resize(1)  # holders keep their slots; nobody new until below one
    sem.release()
    sem.release()
    await asyncio.sleep(0)
    assert order == [0, 1] and sem.in_use == 1
    sem.release()
    await asyncio.wait_for(waiters[2], 1)
    assert order == [0, 1, 2] and sem.in_use == 1
    with pytest.raises(ValueError):
        sem.resize(0)


async def test_resizable_semaphore_cancelled_waiter_leaves_no_trace() -> None:
    sem = ResizableSemaphore(1)
    await sem.acquire()
    waiter = asyncio.create_task(sem.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    sem.release()
    assert sem.in_use == 0 and not sem.locked()


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12
    assert clock.adjust("junk") == 12 and clock.adjust(None) == 12


def test_revoking_stamp() -> None:
    headers = {"stamped_headers": ["batch", "user"], "stamps": {"batch": ["a", "b"], "user": 7}}
    assert revoking_stamp(headers, {"batch": ["b"]}) == {"batch": "b"}
    assert revoking_stamp(headers, {"user": [7]}) == {"user": 7}
    assert revoking_stamp(headers, {"user": 7}) == {"user": 7}
    assert revoking_stamp(headers, {"batch": ["z"], "other": ["a"]}) is None
    assert revoking_stamp({"stamps": {"batch": "a"}}, {"batch": ["a"]}) is None  # not stamped
    assert revoking_stamp(headers, {}) is None


@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:secret@rabbit:5672//", {"hostname": "rabbit", "userid": "guest",
                                           "virtual_host": "/", "port": 5672, "ssl": False,
                                           "transport": "amqp"}),
    ("amqps://u:p@h/prod", {"virtual_host": "prod", "port": 5671, "ssl": True,
                            "transport": "amqp"}),
    ("pyamqp://h/%2Fv", {"userid": None, "virtual_host": "/v", "port": 5672}),
    ("memory://", {"transport": "memory", "hostname": None, "port": None}),
])
def test_broker_info_never_has_the_password(url: str, expected: dict[str, object]) -> None:
    info = describe.broker_info(url, Settings())
    assert {k: info[k] for k in expected} == expected
    assert "password" not in info and "secret" not in json.dumps(info)


def test_conf_is_redacted_and_lists_changes_only() -> None:
    settings = Settings(broker_url="amqp://u:hunter2@h//",
                        result_backend="redis://:hunter2@h/0", worker_concurrency=7)
    changed = describe.conf(settings)
    assert changed == {"broker_url": "amqp://u:***@h//", "result_backend": "redis://:***@h/0",
                       "worker_concurrency": 7}
    everything = describe.conf(settings, with_defaults=True)
    assert everything["task_default_queue"] == "celery" and "hunter2" not in json.dumps(everything)


# -- commands in a running worker ------------------------------------------------------
async def test_unknown_and_failing_commands_answer_errors(kit: Kit) -> None:
    async with kit.run() as worker:
        box = mailbox(worker)
        assert await box.dispatch("nope", {}) == {"error": "KeyError('nope')"}
        assert (await box.dispatch("pool_grow", {"n": "many"}))["error"].startswith(
            "ValueError(")
        assert await box.dispatch("ping", "not a mapping") == {"ok": "pong"}
        assert await box.dispatch("heartbeat", {}) is None


async def test_pool_commands_resize_slot_and_prefetch(kit: Kit) -> None:
    async with kit.run(worker_concurrency=2, worker_prefetch_multiplier=3) as worker:
        box = mailbox(worker)
        assert worker.broker.prefetch == 6
        assert await box.dispatch("pool_grow", {"n": 3}) == {"ok": "pool will grow"}
        assert worker.worker.concurrency == 5 and worker.broker.prefetch == 15
        assert await box.dispatch("pool_shrink", {"n": 10}) == {"ok": "pool will shrink"}
        assert worker.worker.concurrency == 1 and worker.broker.prefetch == 3
        assert await box.dispatch("autoscale", {"max": 4, "min": 2}) == {
            "ok": "autoscale now max=4 min=2"}
        stats = await box.dispatch("stats", {})
        assert stats["pool"]["max-concurrency"] == 4 and stats["prefetch_count"] == 12


async def test_limit_commands(kit: Kit) -> None:
    async with kit.run() as worker:
        box, limits = mailbox(worker), worker.worker.limits
        task = kit.app.tasks["t.add"]
        assert await box.dispatch("time_limit", {"task_name": "t.add", "soft": 1,
                                                 "hard": "2.5"}) == {
            "ok": "time limits set successfully"}
        assert limits.time_limits(task) == (2.5, 1.0)
        assert await box.dispatch("time_limit", {"task_name": "nope"}) == {
            "error": "unknown task"}
        assert await box.dispatch("rate_limit", {"task_name": "t.add", "rate_limit": "2/s"}) == {
            "ok": "new rate limit set successfully"}
        bucket = limits._bucket(task)
        assert bucket is not None and bucket.interval == 0.5
        reply = await box.dispatch("rate_limit", {"task_name": "t.add", "rate_limit": "x/y"})
        assert reply["error"].startswith("Invalid rate limit string")
        assert await box.dispatch("rate_limit", {"task_name": "t.add", "rate_limit": ""}) == {
            "ok": "rate limit disabled successfully"}
        assert limits._bucket(task) is None


async def test_destructive_commands_refused(kit: Kit) -> None:
    async with kit.run(worker_control_allow_destructive=False) as worker:
        box = mailbox(worker)
        for method, arguments in [("shutdown", {}), ("pool_grow", {}),
                                  ("revoke", {"task_id": "a", "terminate": True}),
                                  ("add_consumer", {"queue": "q"})]:
            reply = await box.dispatch(method, arguments)
            assert "CommandRefused" in reply["error"], method
        assert await box.dispatch("revoke", {"task_id": "a"}) == {
            "ok": "tasks a flagged as revoked"}
        assert worker.worker.concurrency == 100


async def test_shutdown_sends_no_reply_and_stops(kit: Kit) -> None:
    async with kit.run() as worker:
        assert await mailbox(worker).dispatch("shutdown", {}) is NO_REPLY
        await worker.wait_for(lambda: worker.worker._stop.is_set())


async def test_consumers_and_queries(kit: Kit) -> None:
    async with kit.run() as worker:
        box = mailbox(worker)
        assert await box.dispatch("add_consumer", {"queue": "extra"}) == {
            "ok": "add consumer extra"}
        assert [q["name"] for q in await box.dispatch("active_queues", {})] == [
            "celery", "extra"]
        blocked = await kit.block.apply_async((1,), queue="extra")
        await worker.wait_for(lambda: worker.state.active)
        found = await box.dispatch("query_task", {"ids": [blocked.id, "other"]})
        assert list(found) == [blocked.id] and found[blocked.id][0] == "active"
        assert (await box.dispatch("active", {}))[0]["args"] == [1]
        assert await box.dispatch("cancel_consumer", {"queue": "extra"}) == {
            "ok": "no longer consuming from extra"}
        assert [q["name"] for q in await box.dispatch("active_queues", {})] == ["celery"]
        kit.gate.open()
        assert await worker.result(blocked.id) == 1
