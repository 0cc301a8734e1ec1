"""Events on ``celeryev`` as Celery's own event receiver and real Flower read them."""

from __future__ import annotations

import contextlib
import signal
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BROKER_URL, wait_for
from tests.flower import get_json, running_flower

pytestmark = pytest.mark.integration

APP = "tests.apps.events:app"


class Capture:
    """Celery's ``EventReceiver`` feeding a ``celery.events.state.State``, in a thread."""

    def __init__(self, celery_app: Any) -> None:
        from celery.events.state import State

        self.state = State()
        self.raw: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._conn = celery_app.connection_for_read()
        self.receiver = celery_app.events.Receiver(self._conn, handlers={"*": self._on_event})
        consume_ready = self.receiver.on_consume_ready

        def on_ready(*args: Any, **kwargs: Any) -> None:
            consume_ready(*args, **kwargs)
            self.ready.set()

        self.receiver.on_consume_ready = on_ready  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.receiver.capture, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.raw.append(dict(event))
            self.state.event(event)

    def start(self) -> Capture:
        self._thread.start()
        assert self.ready.wait(15), "event receiver did not start"
        return self

    def stop(self) -> None:
        self.receiver.should_stop = True
        self._thread.join(10)
        self._conn.release()

    def of(self, node: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Raw events from ``node`` (of type ``kind``)."""
        with self._lock:
            return [e for e in self.raw if e.get("hostname") == node
                    and (kind is None or e["type"] == kind)]

    def task_state(self, task_id: str) -> str | None:
        with self._lock:
            task = self.state.tasks.get(task_id)
            return task.state if task is not None else None


@pytest.fixture
def capture(celery_app: Any, services: dict[str, str]) -> Iterator[Capture]:
    found = Capture(celery_app).start()
    yield found
    found.stop()


@pytest.fixture
def cleanup_queue(celery_app: Any, queue_name: str) -> Iterator[str]:
    """This test's queue, deleted afterwards (a retry an hour away waits in it)."""
    yield queue_name
    with celery_app.connection_for_write() as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_delete(queue_name)


def send_workload(celery_app: Any, queue: str, node: str) -> dict[str, str]:
    """One task ending in each state; returns task id by expected final state.

    The RETRY one is retried an hour later. Its retry message comes straight
    back to the worker, whose ``task-received`` (with the ``eta``) makes the
    state RECEIVED again, as with a Celery worker; whether that event or
    ``task-retried`` is the last one seen depends on the race between the
    retry's publish and its consumption, so both count (see ``retry_seen``).
    """
    ok = celery_app.send_task("events.add", [2, 3], queue=queue)
    failed = celery_app.send_task("events.fail", ["boom"], queue=queue)
    retried = celery_app.send_task("events.retry_later", queue=queue)
    revoked_id = str(uuid.uuid4())
    celery_app.control.revoke(revoked_id, reply=True, destination=[node], timeout=5)
    revoked = celery_app.send_task("events.add", [1, 1], queue=queue, task_id=revoked_id)
    assert ok.get(timeout=30) == 5
    return {"SUCCESS": ok.id, "FAILURE": failed.id, "RETRY": retried.id,
            "REVOKED": revoked.id}


def test_celery_receiver_sees_worker_and_task_events(
        celery_app: Any, start_worker: Any, cleanup_queue: str, capture: Capture) -> None:
    queue = cleanup_queue
    node = f"ev-{queue}@test"
    worker = start_worker("-Q", queue, "-c", "4", "-n", node, "-E", app=APP)
    wait_for(lambda: capture.of(node, "worker-heartbeat"), 10, what="a heartbeat")
    ids = send_workload(celery_app, queue, node)
    running = celery_app.send_task("events.sleep", [60], queue=queue)
    wait_for(lambda: capture.task_state(running.id) == "STARTED", 30, what="started")
    celery_app.control.revoke(running.id, terminate=True, destination=[node])
    ids["REVOKED-terminated"] = running.id
    retry_once = celery_app.send_task("events.retry_once", queue=queue)

    def settled() -> bool:
        return all(retry_seen(state, capture.task_state(task_id))
                   for state, task_id in ids.items()) and \
            capture.task_state(retry_once.id) == "SUCCESS" and \
            len(capture.of(node, "task-received")) >= 7  # the retries received too

    wait_for(settled, 30, what="final task states in Celery's State")

    # Worker events: online first, heartbeats with every field, alive in State.
    online = capture.of(node, "worker-online")[0]
    beat = capture.of(node, "worker-heartbeat")[-1]
    for event in (online, beat):
        assert {"type", "timestamp", "hostname", "utcoffset", "pid", "clock", "freq", "active",
                "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"} <= event.keys()
    assert beat["freq"] == 2.0 and beat["sw_ident"] == "py-celery"
    assert beat["pid"] == worker.proc.pid and len(beat["loadavg"]) == 3
    assert capture.state.workers[node].alive

    def events_of(task_id: str) -> dict[str, dict[str, Any]]:
        return {e["type"]: e for e in capture.of(node) if e.get("uuid") == task_id}

    ok = events_of(ids["SUCCESS"])
    assert ok["task-received"]["name"] == "events.add"
    assert ok["task-received"]["args"] == "[2, 3]"  # the Celery client's argsrepr
    assert ok["task-received"]["root_id"] == ids["SUCCESS"]
    assert {"task-received", "task-started", "task-succeeded"} <= ok.keys()
    assert ok["task-succeeded"]["result"] == "5" and ok["task-succeeded"]["runtime"] >= 0
    failed = events_of(ids["FAILURE"])["task-failed"]
    assert failed["exception"] == "ValueError('boom')" and "ValueError" in failed["traceback"]
    retried = events_of(ids["RETRY"])["task-retried"]
    assert retried["exception"] == "KeyError('later')"
    again = [e for e in capture.of(node, "task-received") if e["uuid"] == ids["RETRY"]]
    # Its retry came back with its retry count and the ETA an hour away.
    assert [(e["retries"], bool(e["eta"])) for e in again] == [(0, False), (1, True)]
    revoked = events_of(ids["REVOKED"])["task-revoked"]
    assert (revoked["terminated"], revoked["expired"]) == (False, False)
    terminated = events_of(running.id)["task-revoked"]
    assert terminated["terminated"] is True and terminated["signum"] == signal.SIGTERM
    # A retried task is received again, with its retry count.
    assert [e["retries"] for e in capture.of(node, "task-received")
            if e["uuid"] == retry_once.id] == [0, 1]
    assert capture.state.tasks[ids["SUCCESS"]].worker.hostname == node

    # Warm shutdown: worker-offline, and State marks the worker gone.
    worker.stop()
    wait_for(lambda: capture.of(node, "worker-offline"), 15, what="worker-offline")
    assert not capture.state.workers[node].alive


def test_enable_and_disable_events_from_a_celery_client(
        celery_app: Any, start_worker: Any, queue_name: str, capture: Capture) -> None:
    node = f"en-{queue_name}@test"
    start_worker("-Q", queue_name, "-n", node, app=APP)
    wait_for(lambda: capture.of(node, "worker-heartbeat"), 10, what="a heartbeat")
    before = celery_app.send_task("events.add", [1, 1], queue=queue_name)
    assert before.get(timeout=30) == 2

    reply = celery_app.control.enable_events(destination=[node], reply=True, timeout=5)
    assert reply == [{node: {"ok": "task events enabled"}}]
    during = celery_app.send_task("events.add", [2, 2], queue=queue_name)
    wait_for(lambda: capture.task_state(during.id) == "SUCCESS", 30, what="task events")

    reply = celery_app.control.disable_events(destination=[node], reply=True, timeout=5)
    assert reply == [{node: {"ok": "task events disabled"}}]
    after = celery_app.send_task("events.add", [3, 3], queue=queue_name)
    assert after.get(timeout=30) == 6
    # The worker's heartbeat after the task proves its events were flushed by now.
    seen = len(capture.of(node, "worker-heartbeat"))
    wait_for(lambda: len(capture.of(node, "worker-heartbeat")) > seen, 10, what="heartbeat")
    assert capture.task_state(before.id) is None and capture.task_state(after.id) is None
    assert [e["type"] for e in capture.of(node) if e.get("uuid") == during.id] == [
        "task-received", "task-started", "task-succeeded"]


def retry_seen(expected: str, state: str | None) -> bool:
    """``state`` is the final state expected (RETRY: or RECEIVED by the retry's message)."""
    expected = expected.split("-")[0]
    return state == expected or (expected == "RETRY" and state == "RECEIVED")


def test_worker_offline_after_a_cold_shutdown(
        celery_app: Any, start_worker: Any, cleanup_queue: str, capture: Capture) -> None:
    queue = cleanup_queue
    node = f"cold-{queue}@test"
    worker = start_worker("-Q", queue, "-n", node, "-E", app=APP)
    running = celery_app.send_task("events.sleep", [60], queue=queue)
    wait_for(lambda: capture.task_state(running.id) == "STARTED", 30, what="started")
    worker.signal(signal.SIGQUIT)
    assert worker.wait_exit(30) == 0
    wait_for(lambda: capture.of(node, "worker-offline"), 15, what="worker-offline")
    assert not capture.state.workers[node].alive


# -- real Flower -----------------------------------------------------------------------
@pytest.fixture
def flower(services: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Flower on the shared RabbitMQ; yields its base URL."""
    with running_flower(BROKER_URL, tmp_path / "flower.log") as base:
        yield base


def test_flower_lists_the_worker_and_its_tasks(
        celery_app: Any, start_worker: Any, cleanup_queue: str, flower: str) -> None:
    queue = cleanup_queue
    node = f"fl-{queue}@test"
    start_worker("-Q", queue, "-c", "4", "-n", node, "-E", app=APP)
    # Listed as online from its heartbeats (Flower's event state).
    wait_for(lambda: get_json(f"{flower}/api/workers?status=true").get(node) is True, 20,
             interval=0.2, what="worker online in flower")
    ids = send_workload(celery_app, queue, node)

    seen: list[dict[str, Any]] = [{}]

    def arrived() -> bool:
        tasks = seen[0] = get_json(f"{flower}/api/tasks?workername={node}")
        return all(retry_seen(state, (tasks.get(task_id) or {}).get("state"))
                   for state, task_id in ids.items()) and bool(
            tasks[ids["RETRY"]].get("retried"))

    try:
        wait_for(arrived, 30, interval=0.3, what="flower task states")
    except AssertionError:
        states = {s: (seen[0].get(i) or {}).get("state") for s, i in ids.items()}
        raise AssertionError(f"flower states {states}") from None
    tasks = seen[0]
    ok = tasks[ids["SUCCESS"]]
    assert ok["name"] == "events.add" and ok["result"] == "5" and ok["worker"] == node
    assert ok["args"] == "[2, 3]" and ok["received"] and ok["started"] and ok["succeeded"]
    assert tasks[ids["FAILURE"]]["exception"] == "ValueError('boom')"
    assert tasks[ids["RETRY"]]["exception"] == "KeyError('later')"
    revoked = get_json(f"{flower}/api/tasks?workername={node}&state=REVOKED")
    assert list(revoked) == [ids["REVOKED"]]
    # Refreshed by inspect commands (their replies are the remote-control part).
    wait_for(lambda: node in get_json(f"{flower}/api/workers?refresh=1"), 20,
             what="the worker in a refreshed list")
    # What Flower's worker page shows, from the inspect replies.
    worker = get_json(f"{flower}/api/workers?workername={node}")[node]
    assert worker["stats"]["pool"]["max-concurrency"] == 4
    assert worker["stats"]["broker"]["transport"] == "amqp" and worker["stats"]["pid"] > 0
    assert "events.add" in worker["registered"]
    assert [q["name"] for q in worker["active_queues"]] == [queue]
    with urllib.request.urlopen(f"{flower}/worker/{node}", timeout=10) as page:
        assert page.status == 200 and node in page.read().decode()
    info = get_json(f"{flower}/api/task/info/{ids['SUCCESS']}")
    assert info["state"] == "SUCCESS" and info["root_id"] == ids["SUCCESS"]
