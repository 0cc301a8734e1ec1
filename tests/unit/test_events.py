"""Events: the dispatcher (batches, drops, never blocks) and the payloads a worker sends."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from asyncworker import App, Reject, Task
from asyncworker.broker.memory import MemoryBroker
from asyncworker.broker.topology import ExchangeSpec
from asyncworker.events import EventDispatcher, EventsPlugin
from asyncworker.events import dispatcher as dispatcher_mod
from asyncworker.protocol import OutgoingMessage
from asyncworker.testing import TestWorker, run_worker

COMMON = {"type", "timestamp", "hostname", "utcoffset", "pid", "clock"}


def published(broker: MemoryBroker) -> list[tuple[str, str, Any]]:
    """(exchange, routing key, decoded body) of every transient publish."""
    return [(exchange, key, json.loads(message.body))
            for exchange, key, message in broker.transient]


def events(broker: MemoryBroker) -> list[dict[str, Any]]:
    """Every event published so far, lists unpacked, in order."""
    out: list[dict[str, Any]] = []
    for _, _, body in published(broker):
        out.extend(body if isinstance(body, list) else [body])
    return out


async def until(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)
    return value


class StuckBroker(MemoryBroker):
    """A broker whose event publishes never complete (a broker gone silent)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        self.attempts += 1
        await asyncio.Event().wait()


class DownBroker(MemoryBroker):
    """A broker that refuses every event publish."""

    async def publish_transient(self, exchange: ExchangeSpec, routing_key: str,
                                message: OutgoingMessage) -> None:
        raise ConnectionError("broker down")


# -- the dispatcher ------------------------------------------------------------------
async def test_every_event_carries_celerys_common_fields() -> None:
    broker = MemoryBroker()
    dispatcher = EventDispatcher(broker, "celery@unit")
    dispatcher.start()
    dispatcher.send("worker-heartbeat", freq=2.0)
    dispatcher.send("task-started", uuid="a")
    await dispatcher.close()
    first, second = events(broker)
    assert first.keys() >= COMMON and second.keys() >= COMMON
    assert first["hostname"] == "celery@unit" and first["pid"] == os.getpid()
    assert first["type"] == "worker-heartbeat" and first["freq"] == 2.0
    assert second["clock"] == first["clock"] + 1
    assert first["utcoffset"] == dispatcher_mod.utcoffset()
    exchange, key, message = broker.transient[0]
    assert (exchange, key) == ("celeryev", "worker.heartbeat")
    assert broker.exchange_types["celeryev"] == "topic"
    assert message.headers == {"hostname": "celery@unit"}
    assert message.content_type == "application/json"
    assert broker.published == []  # events are not task publishes


async def test_task_events_share_messages_worker_events_go_alone() -> None:
    broker = MemoryBroker()
    dispatcher = EventDispatcher(broker, "celery@unit", batch_size=2)
    for n in range(5):
        dispatcher.send("task-received", uuid=str(n))
    dispatcher.send("worker-heartbeat")
    dispatcher.start()  # everything queued before the first flush
    await dispatcher.close()
    shapes = [(key, len(body) if isinstance(body, list) else None)
              for _, key, body in published(broker)]
    # In order: a run of task events in messages of two, the lone last one under its own key.
    assert shapes == [("task.multi", 2), ("task.multi", 2), ("task.received", None),
                      ("worker.heartbeat", None)]
    assert [e.get("uuid") for e in events(broker)] == ["0", "1", "2", "3", "4", None]
    assert dispatcher.published == 6 and dispatcher.dropped == 0


async def test_a_full_queue_drops_new_events_and_counts_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatcher_mod, "PUBLISH_TIMEOUT", 0.05)
    broker = StuckBroker()
    dispatcher = EventDispatcher(broker, "celery@unit", capacity=3)
    dispatcher.start()
    dispatcher.send("worker-online")
    await until(lambda: broker.attempts == 1)  # the publish is stuck in the broker
    # send() is synchronous: all 1000 return while the broker is stuck.
    for n in range(1000):
        dispatcher.send("task-started", uuid=str(n))
    assert dispatcher.pending == 3 and dispatcher.dropped == 997 and broker.attempts == 1
    # The stuck publish times out and its event is counted too.
    await until(lambda: dispatcher.dropped >= 998)
    await dispatcher.close(timeout=0.01)
    assert dispatcher.published == 0 and dispatcher.dropped == 1001


async def test_events_the_broker_refuses_are_dropped_and_counted() -> None:
    dispatcher = EventDispatcher(DownBroker(), "celery@unit")
    dispatcher.start()
    for n in range(10):
        dispatcher.send("task-succeeded", uuid=str(n))
    await until(lambda: dispatcher.dropped == 10)
    dispatcher.send("worker-heartbeat")
    await until(lambda: dispatcher.dropped == 11)
    await dispatcher.close()
    assert dispatcher.published == 0


# -- payloads from a worker ----------------------------------------------------------
def events_app() -> App:
    app = App("events-unit")

    @app.task(name="ev.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="ev.fail")
    async def fail() -> None:
        raise ValueError("boom")

    @app.task(name="ev.retry", bind=True, max_retries=1)
    async def retry(self: Task) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("again"), countdown=0)
        return "done"

    @app.task(name="ev.reject")
    async def reject() -> None:
        raise Reject("no", requeue=False)

    return app


def of(worker: TestWorker, task_id: str) -> dict[str, dict[str, Any]]:
    """The task events of ``task_id`` by type (the last of each type)."""
    return {e["type"]: e for e in events(worker.broker) if e.get("uuid") == task_id}


async def test_task_events_carry_celerys_fields() -> None:
    app = events_app()
    async with run_worker(app, worker_send_task_events=True) as worker:
        ok = await app.send_task("ev.add", [2, 3], expires=600)
        failed = await app.send_task("ev.fail")
        retried = await app.send_task("ev.retry")
        rejected = await app.send_task("ev.reject")
        worker.state.revoked.add("gone", time.time())
        await app.send_task("ev.add", [1, 1], task_id="gone")
        await app.send_task("ev.add", [1, 1], task_id="late", expires=-1)
        for task_id in (ok.id, failed.id, retried.id):
            await worker.stored(task_id)
        await worker.idle()
        await until(lambda: "task-succeeded" in of(worker, retried.id)
                    and "task-rejected" in of(worker, rejected.id)
                    and "task-revoked" in of(worker, "late"))

    received = of(worker, ok.id)["task-received"]
    # The producer's argsrepr header, as Celery's worker sends it.
    assert received["name"] == "ev.add" and received["args"] == "[2, 3]"
    assert received["kwargs"] == "{}" and received["retries"] == 0
    assert received["root_id"] == ok.id and received["parent_id"] is None
    assert received["eta"] is None and received["expires"].startswith("20")
    assert "task-started" in of(worker, ok.id)
    succeeded = of(worker, ok.id)["task-succeeded"]
    assert succeeded["result"] == "5" and 0 <= succeeded["runtime"] < 5

    failure = of(worker, failed.id)["task-failed"]
    assert failure["exception"] == "ValueError('boom')"
    assert "ValueError: boom" in failure["traceback"]

    retry = of(worker, retried.id)
    assert retry["task-retried"]["exception"] == "KeyError('again')"
    assert retry["task-succeeded"]["result"] == "'done'"
    assert [e["retries"] for e in events(worker.broker)
            if e.get("uuid") == retried.id and e["type"] == "task-received"] == [0, 1]

    assert of(worker, rejected.id)["task-rejected"]["requeue"] is False
    assert {k: of(worker, "gone")["task-revoked"][k] for k in ("terminated", "signum",
            "expired")} == {"terminated": False, "signum": None, "expired": False}
    assert of(worker, "late")["task-revoked"]["expired"] is True
    assert all(e.keys() >= COMMON for e in events(worker.broker))


async def test_worker_events_online_heartbeats_offline() -> None:
    app = events_app()
    async with run_worker(app, worker_heartbeat_interval=0.05) as worker:
        result = await app.send_task("ev.add", [1, 1])
        await worker.stored(result.id)
        await until(lambda: sum(e["type"] == "worker-heartbeat"
                                and e["processed"] == 1 for e in events(worker.broker)) >= 1)
    kinds = [e["type"] for e in events(worker.broker)]
    assert kinds[0] == "worker-online" and kinds[-1] == "worker-offline"
    assert not any(kind.startswith("task-") for kind in kinds)  # task events are off
    beat = next(e for e in events(worker.broker) if e["type"] == "worker-heartbeat")
    assert beat["freq"] == 0.05 and beat["sw_ident"] == "py-celery" and beat["sw_sys"]
    assert len(beat["loadavg"]) == 3 and beat["active"] == 0
    routing = {key for _, key, _ in published(worker.broker)}
    assert {"worker.online", "worker.heartbeat", "worker.offline"} <= routing


def plugin_of(app: App) -> EventsPlugin:
    return next(p for p in app.plugins if isinstance(p, EventsPlugin))


async def test_enable_and_disable_events_commands() -> None:
    app = events_app()
    plugin = plugin_of(app)
    async with run_worker(app) as worker:
        first = await app.send_task("ev.add", [1, 1])
        await worker.stored(first.id)
        assert await plugin.enable_events(worker.worker) == {"ok": "task events enabled"}
        assert await plugin.enable_events(worker.worker) == {"ok": "task events already enabled"}
        second = await app.send_task("ev.add", [2, 2])
        await worker.stored(second.id)
        await until(lambda: "task-succeeded" in of(worker, second.id))
        assert await plugin.disable_events(worker.worker) == {"ok": "task events disabled"}
        third = await app.send_task("ev.add", [3, 3])
        await worker.stored(third.id)
        assert await app.control_commands["disable_events"](worker.worker) == {
            "ok": "task events already disabled"}
    assert of(worker, first.id) == {} and of(worker, third.id) == {}


async def test_remote_events_lapse_without_enable_events() -> None:
    app = events_app()
    plugin = plugin_of(app)
    async with run_worker(app, worker_heartbeat_interval=0.02,
                          worker_remote_events_timeout=0.1) as worker:
        parts = plugin.parts(worker.worker)
        await plugin.enable_events(worker.worker)
        assert parts.tasks.enabled
        # Repeated enable_events (as Flower sends every 5 s) keep them on.
        for _ in range(4):
            await asyncio.sleep(0.05)
            await plugin.enable_events(worker.worker)
            assert parts.tasks.enabled
        await until(lambda: not parts.tasks.enabled, timeout=2)


async def test_task_events_from_the_setting_do_not_lapse() -> None:
    app = events_app()
    plugin = plugin_of(app)
    async with run_worker(app, worker_send_task_events=True, worker_heartbeat_interval=0.02,
                          worker_remote_events_timeout=0.05) as worker:
        parts = plugin.parts(worker.worker)
        await plugin.enable_events(worker.worker)
        beats = parts.dispatcher.clock
        await until(lambda: parts.dispatcher.clock >= beats + 10)  # 10 heartbeats later
        assert parts.tasks.enabled
