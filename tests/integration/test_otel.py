"""OpenTelemetry across real processes: a Celery client instrumented with
opentelemetry-instrumentation-celery publishes, asyncworker (tracing plugin) runs
the tasks in its trace and carries it on to children, retries and a real
instrumented Celery worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps.otel_spans import read_spans
from tests.conftest import BROKER_URL, PG_DSN, REPO, WorkerProcess, process_env, wait_for

pytestmark = pytest.mark.integration

CELERY_BACKEND = "db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1]


def _celery_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, CELERY_BROKER_URL=BROKER_URL, CELERY_RESULT_BACKEND=CELERY_BACKEND,
                **extra)


@pytest.fixture
def celery_otel_worker(services: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Celery worker with the instrumentation on a queue of its own; yields the
    queue and its spans file."""
    queue, spans = f"t.celery-otel.{os.getpid()}.{tmp_path.name[-8:]}", tmp_path / "celery.spans"
    log = open(tmp_path / "celery-otel.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.apps.celery_otel_worker:app", "worker",
         "-P", "solo", "-Q", queue, "-n", f"otel-{os.getpid()}-{tmp_path.name[-8:]}@%h",
         "--without-mingle", "--without-gossip",
         "--without-heartbeat", "-l", "INFO"], cwd=REPO,
        env=_celery_env(OTEL_TEST_SPANS=str(spans)), stdout=log, stderr=subprocess.STDOUT)
    # Consuming before the test publishes to it: a slow start (a loaded machine) must
    # not leave the task waiting past the test's deadline.
    wait_for(lambda: b"ready." in (tmp_path / "celery-otel.log").read_bytes()
             or proc.poll() is not None, 120, what="the Celery worker ready")
    assert proc.poll() is None, (tmp_path / "celery-otel.log").read_text()[-3000:]
    yield queue, spans
    proc.terminate()
    proc.wait(30)
    log.close()


def _span(path: Path, name: str, count: int = 1) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        named = [s for s in read_spans(path) if s["name"] == name]
        return named if len(named) >= count else []
    spans: list[dict[str, Any]] = wait_for(found, 30, what=f"{count} {name} span(s)")
    return spans


def test_worker_continues_a_celery_clients_trace(
        services: dict[str, str], queue_name: str, tmp_path: Path,
        celery_otel_worker: tuple[str, Path]) -> None:
    celery_queue, celery_spans = celery_otel_worker
    spans = tmp_path / "asyncworker.spans"
    # Children default to this test's queue (not "celery"), under a node name of its own.
    env = {**process_env(result_backend="db+" + PG_DSN, task_default_queue=queue_name,
                         worker_nodename=f"otel.{queue_name}@localhost"),
           "OTEL_TEST_SPANS": str(spans),
           "OTEL_TEST_CELERY_QUEUE": celery_queue}
    worker = WorkerProcess(["-A", "tests.apps.otel_app:app", "-Q", queue_name], env,
                           tmp_path / "otel-worker.log")
    try:
        worker.wait_ready()
        produced = subprocess.run(
            [sys.executable, "-m", "tests.apps.otel_producer", queue_name], cwd=REPO,
            env=_celery_env(), capture_output=True, text=True, timeout=90, check=True)
        sent = json.loads(produced.stdout.strip().splitlines()[-1])

        # The extra header and the trace context are readable on self.request.
        ok = sent["ok"]
        assert ok["result"]["x"] == 7 and ok["result"]["x_custom"] == "hello"
        producer_span = ok["span"]
        assert producer_span["name"] == "apply_async/o.ok"
        # Our producer spans have the attributes the Celery client's have.
        ours_publish = _span(spans, "apply_async/o.ok")[0]
        assert sorted(ours_publish["attributes"]) == sorted(producer_span["attributes"])
        assert ok["result"]["traceparent"].startswith(
            f"00-{producer_span['trace_id']}-{producer_span['span_id']}-")

        # run/o.ok: a CONSUMER child of the Celery client's producer span.
        runs = {s["attributes"]["messaging.message.id"]: s
                for s in _span(spans, "run/o.ok", 2)}
        run = runs[ok["id"]]
        assert run["kind"] == "CONSUMER"
        assert run["trace_id"] == producer_span["trace_id"]
        assert run["parent_id"] == producer_span["span_id"]
        assert run["status"] == "UNSET"
        assert {k: run["attributes"][k] for k in (
            "celery.action", "celery.task_name", "celery.state", "messaging.destination",
            "messaging.conversation_id")} == {
            "celery.action": "run", "celery.task_name": "o.ok", "celery.state": "SUCCESS",
            "messaging.destination": queue_name, "messaging.conversation_id": ok["id"]}

        # A failure: status ERROR, the exception recorded.
        (failed,) = _span(spans, "run/o.fail")
        assert failed["status"] == "ERROR" and failed["description"] == "'broken'"
        assert failed["events"] == ["exception"]
        assert failed["parent_id"] == sent["fail"]["span"]["span_id"]

        # A child sent from the body runs in the parent's trace.
        (parent,) = _span(spans, "run/o.parent")
        assert parent["trace_id"] == sent["parent"]["span"]["trace_id"]
        child = runs[sent["parent"]["result"]]
        assert child["trace_id"] == parent["trace_id"]
        child_publish = [s for s in read_spans(spans) if s["name"] == "apply_async/o.ok"]
        assert child_publish[0]["parent_id"] == parent["span_id"]
        assert child["parent_id"] == child_publish[0]["span_id"]

        # A retry: both attempts in the client's trace, the second under the first.
        # Spans are written as they end: the second attempt may end first.
        first, second = sorted(_span(spans, "run/o.flaky", 2), key=lambda s: s["start_time"])
        assert sent["flaky"]["result"] == "done"
        assert first["trace_id"] == second["trace_id"] == sent["flaky"]["span"]["trace_id"]
        assert first["attributes"]["celery.state"] == "RETRY"
        assert second["attributes"]["celery.retries"] == 1

        # asyncworker -> a Celery worker with the instrumentation: it continues the trace.
        to_celery = subprocess.run(
            [sys.executable, "-c", _SEND_TO_CELERY, queue_name], cwd=REPO, env=_celery_env(),
            capture_output=True, text=True, timeout=90, check=True)
        remote_id = to_celery.stdout.strip().splitlines()[-1]
        (ours,) = _span(spans, "run/o.to_celery")
        publish = [s for s in read_spans(spans) if s["name"] == "apply_async/o.remote"]
        assert publish and publish[0]["parent_id"] == ours["span_id"]
        (remote,) = _span(celery_spans, "run/o.remote")
        # The same attribute names as a Celery worker's span (set where they apply).
        assert sorted(remote["attributes"]) == sorted(ours["attributes"])
        assert remote["attributes"]["messaging.message.id"] == remote_id
        assert remote["trace_id"] == ours["trace_id"]
        assert remote["parent_id"] == publish[0]["span_id"]
    finally:
        worker.stop()


# A plain Celery client (not instrumented) asks asyncworker to run o.to_celery and
# prints the id of the task that one sent to the Celery worker.
_SEND_TO_CELERY = """
import os, sys
from celery import Celery
app = Celery("c", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
print(app.send_task("o.to_celery", queue=sys.argv[1]).get(timeout=30))
"""
