"""Hooks to Prometheus series: names, labels, bounded cardinality, and the probes' logic."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from asyncworker.beat.entries import Tick
from asyncworker.monitoring.labels import BoundedLabel, TaskNames, reason_prefix
from asyncworker.monitoring.metrics import BeatMetrics, TaskMetrics, host_label
from asyncworker.monitoring.server import LoopHeartbeat, MonitorServer

HOST = "worker-7"


def job(name: str | None = "app.add", queue: str = "q1", exc: BaseException | None = None,
        received: float = 100.0, started: float | None = 100.25, eta: datetime | None = None,
        runtime: float = 0.3) -> Any:
    return SimpleNamespace(name=name, queue=queue, received=received, started=started,
                           request=SimpleNamespace(eta=eta), runtime=runtime,
                           outcome=SimpleNamespace(exc=exc))


def metrics() -> tuple[TaskMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return TaskMetrics(registry, f"w1@{HOST}", TaskNames({"app.add", "app.div"})), registry


def sample(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_each_hook_counts_its_exporter_counter_with_task_labels() -> None:
    m, registry = metrics()
    labels = {"name": "app.add", "hostname": HOST, "queue_name": "q1"}
    for point in ("task_received", "task_started", "task_succeeded", "task_retried",
                  "task_rejected", "task_revoked", "task_expired"):
        getattr(m, point)(job())
    assert {kind: sample(registry, f"celery_task_{kind}_total", **labels) for kind in
            ("received", "started", "succeeded", "retried", "rejected", "revoked")} == {
        "received": 1, "started": 1, "succeeded": 1, "retried": 1, "rejected": 1,
        "revoked": 2}  # expiry is a revocation, as Celery's task-revoked(expired=True)
    m.task_failed(job(exc=ZeroDivisionError("x")))
    assert sample(registry, "celery_task_failed_total", exception="ZeroDivisionError",
                  **labels) == 1
    # The zero series the exporter shows for a seen task (exception "").
    assert sample(registry, "celery_task_failed_total", exception="", **labels) == 0


def test_histograms_runtime_on_success_and_queue_wait_from_receipt_or_eta() -> None:
    m, registry = metrics()
    labels = {"name": "app.add", "hostname": HOST, "queue_name": "q1"}
    m.task_started(job(received=100.0, started=100.25))
    eta = datetime.fromtimestamp(200.0, UTC)
    m.task_started(job(received=100.0, started=200.5, eta=eta))  # held 100 s: not a wait
    m.task_succeeded(job(runtime=0.3))
    m.task_failed(job(exc=ValueError()))  # the exporter times successes only
    assert sample(registry, "celery_task_queue_wait_time_count", **labels) == 2
    assert sample(registry, "celery_task_queue_wait_time_sum", **labels) == 0.75
    assert sample(registry, "celery_task_runtime_count", **labels) == 1
    assert sample(registry, "celery_task_runtime_bucket", le="0.5", **labels) == 1
    assert sample(registry, "celery_task_runtime_bucket", le="0.25", **labels) == 0


def test_unknown_task_names_share_one_label() -> None:
    m, registry = metrics()
    for i in range(50):
        m.task_rejected(job(name=f"garbage.{i}"))
    m.task_rejected(job(name=None))  # undecodable message
    assert sample(registry, "celery_task_rejected_total", name="unknown", hostname=HOST,
                  queue_name="q1") == 51
    names = {s.labels["name"] for family in registry.collect() for s in family.samples
             if "name" in s.labels}
    assert names == {"unknown"}


def test_exception_types_and_dead_letter_reasons_are_capped() -> None:
    m, registry = metrics()
    m.exceptions.limit = 2
    for cls in (KeyError, ValueError, TypeError, OSError):
        m.task_failed(job(exc=cls()))
    exceptions = {s.labels["exception"] for family in registry.collect()
                  for s in family.samples if s.labels.get("exception")}
    assert exceptions == {"KeyError", "ValueError", "other"}
    m.task_dead_lettered(job(), "task raised Reject('user text 1')")
    m.task_dead_lettered(job(), "task raised Reject('user text 2')")
    m.task_dead_lettered(job(), "task failed")
    assert sample(registry, "asyncworker_dead_letters_total", reason="task raised Reject") == 2
    assert sample(registry, "asyncworker_dead_letters_total", reason="task failed") == 1


def test_bounded_label_and_helpers() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    assert reason_prefix("result could not be stored") == "result could not be stored"
    assert reason_prefix("x: detail") == "x"
    assert host_label("celery@web-1") == "web-1"
    assert host_label("plain") == "plain"


def test_beat_hooks() -> None:
    registry = CollectorRegistry()
    beat = BeatMetrics(registry)
    tick = Tick("nightly", datetime(2026, 1, 1, tzinfo=UTC))
    beat.beat_fired(tick, 0.2)
    beat.beat_missed(tick, 3)
    beat.beat_took_over(tick, "other-node")
    assert sample(registry, "asyncworker_beat_fired_total", entry="nightly") == 1
    assert sample(registry, "asyncworker_beat_missed_total", entry="nightly") == 3
    assert sample(registry, "asyncworker_beat_took_over_total", entry="nightly") == 1
    assert sample(registry, "asyncworker_beat_lag_seconds_count") == 1


async def test_healthz_reports_a_stale_heartbeat_and_readyz_asks_the_owner() -> None:
    heartbeat = LoopHeartbeat(max_lag=0.2)
    ready = [(False, "broker disconnected")]
    server = MonitorServer(CollectorRegistry(), "127.0.0.1", 0, heartbeat, lambda: ready[0])
    try:
        assert server.respond("/healthz", None)[0] == 503  # not started
        heartbeat.start()
        await asyncio.sleep(0)
        assert server.respond("/healthz", None)[:1] == (200,)
        assert server.respond("/readyz", None) == (503, "text/plain; charset=utf-8",
                                                   b"broker disconnected\n")
        ready[0] = (True, "ok")
        assert server.respond("/readyz", None)[0] == 200
        time.sleep(0.3)  # noqa: ASYNC251 - blocks this loop: the heartbeat cannot run
        status, _, body = server.respond("/healthz", None)
        assert status == 503 and b"event loop blocked" in body
        assert server.respond("/readyz", None)[0] == 503
        assert server.respond("/nothing", None)[0] == 404
        assert server.respond("/metrics", None)[0] == 200
    finally:
        await heartbeat.stop()
        server._httpd.server_close()


def test_mailbox_ping_expires_survives_the_amqp_encoding() -> None:
    from pamqp import decode, encode

    from asyncworker.monitoring.ping import ping_request

    body, headers = ping_request("n@h", "t", "reply", 2.0)
    assert body["destination"] == ["n@h"] and body["reply_to"]["routing_key"] == "reply"
    # What the worker reads after the header table went over the wire.
    _, table = decode.field_table(encode.field_table(headers))
    assert isinstance(headers["expires"], int)  # a float goes out as 32 bits
    assert table["expires"] >= time.time() + 1.0
