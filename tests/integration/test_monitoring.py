"""Monitoring of a real worker process: /metrics, /healthz, /readyz, ``asyncworker ping``,
and celery-exporter scraping a fleet of one Celery worker and one asyncworker worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PG_DSN, REPO, own_vhost, process_env, wait_for

pytestmark = pytest.mark.integration

APP = "tests.apps.monitoring:app"
#: celery-exporter lives in a venv of its own (it pins old redis / prometheus-client).
EXPORTER_PYTHON = REPO / ".venv-tools/exporter/bin/python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """Status and body of ``GET path`` (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def samples(port: int) -> Samples:
    """Every sample of ``/metrics``."""
    status, text = get(port, "/metrics", timeout=10)
    assert status == 200, text
    return parse(text)


def value(found: Samples, metric: str, /,
          **labels: str) -> float:
    return found.get((metric, frozenset(labels.items())), 0.0)


def test_metrics_count_the_run_exactly(celery_app: Any, start_worker: Any,
                                       queue_name: str) -> None:
    port = free_port()
    start_worker("-Q", queue_name, "-n", f"mon@host-{queue_name}", "--http-port", str(port),
                 app=APP)
    host = f"host-{queue_name}"
    sends = {"mon.ok": ([1], 5), "mon.fail": ([], 3), "mon.retry_once": ([], 2),
             "mon.reject": ([], 2), "mon.not_registered": ([], 1)}
    for name, (args, times) in sends.items():
        for _ in range(times):
            celery_app.send_task(name, args, queue=queue_name)

    def settled() -> bool:
        found = samples(port)
        done = sum(found.get(key, 0.0) for key in found if key[0] in (
            "celery_task_succeeded_total", "celery_task_failed_total",
            "celery_task_rejected_total"))
        return done == 5 + 3 + 2 + 2 + 1
    wait_for(settled, 30, interval=0.2, what="every task closed in /metrics")
    found = samples(port)

    def count(kind: str, name: str, **extra: str) -> float:
        return value(found, f"celery_task_{kind}_total", name=name, hostname=host,
                     queue_name=queue_name, **extra)

    assert [count(k, "mon.ok") for k in ("received", "started", "succeeded")] == [5, 5, 5]
    assert count("failed", "mon.fail", exception="Boom") == 3
    assert count("succeeded", "mon.fail") == 0
    # A retry is published again: two receipts and starts, one retried, one success.
    assert [count(k, "mon.retry_once") for k in
            ("received", "started", "retried", "succeeded")] == [4, 4, 2, 2]
    assert count("rejected", "mon.reject") == 2
    # A name this worker does not know is counted under "unknown", never under its own.
    assert count("rejected", "unknown") == 1
    assert not any(dict(labels).get("name") == "mon.not_registered" for _, labels in found)
    # Every counter of a seen task is present (at 0), as celery-exporter shows them.
    for kind in ("revoked", "rejected", "retried"):
        assert ("celery_task_" + kind + "_total", frozenset(
            {"name": "mon.ok", "hostname": host, "queue_name": queue_name}.items())) in found
    runtime = {"name": "mon.ok", "hostname": host, "queue_name": queue_name}
    assert value(found, "celery_task_runtime_count", **runtime) == 5
    assert value(found, "celery_task_runtime_bucket", le="+Inf", **runtime) == 5
    assert value(found, "celery_task_queue_wait_time_count", **runtime) == 5
    assert value(found, "celery_task_runtime_count", name="mon.retry_once", hostname=host,
                 queue_name=queue_name) == 2
    assert value(found, "celery_worker_up", hostname=host) == 1
    assert value(found, "celery_worker_tasks_active", hostname=host) == 0
    assert value(found, "asyncworker_concurrency_limit") == 100
    # Results of 5 + 3 + 2 tasks and 2 retries' states went through the batch writer.
    assert value(found, "asyncworker_result_batch_size_sum") >= 10
    assert value(found, "asyncworker_result_write_seconds_count") >= 1


def test_healthz_fails_while_the_loop_is_blocked(celery_app: Any, start_worker: Any,
                                                 queue_name: str) -> None:
    port = free_port()
    start_worker("-Q", queue_name, "--http-port", str(port), app=APP,
                 worker_health_max_lag=0.5)
    assert get(port, "/healthz")[0] == 200
    celery_app.send_task("mon.block_loop", [4.0], queue=queue_name)
    # The probe answers (from its own thread) with a failure instead of hanging.
    _, body = wait_for(lambda: (r := get(port, "/healthz", timeout=1.0))[0] == 503 and r,
                       10, what="/healthz failing")
    assert "event loop blocked" in body
    assert get(port, "/readyz", timeout=1.0)[0] == 503
    wait_for(lambda: get(port, "/healthz")[0] == 200, 15, what="/healthz recovered")
    assert get(port, "/readyz") == (200, "ok\n")


def test_beat_serves_its_metrics(start_worker: Any, queue_name: str) -> None:
    port = free_port()
    entry = f"mon-{queue_name}"
    schedule = {entry: {"task": "mon.ok", "schedule": 0.2, "args": [1],
                        "options": {"queue": queue_name}}}
    start_worker("--http-port", str(port), app=APP, command="beat", beat_schedule=schedule)
    wait_for(lambda: value(samples(port), "asyncworker_beat_fired_total", entry=entry) >= 2,
             20, what="beat ticks counted")
    assert get(port, "/readyz")[0] == 200 and get(port, "/healthz")[0] == 200


def _rabbitmq(action: str) -> None:
    subprocess.run(["bash", str(REPO / "deploy/local/services.sh"), "rabbitmqctl", action],
                   check=True, capture_output=True)


def test_readyz_follows_a_broker_outage(start_worker: Any, queue_name: str) -> None:
    port = free_port()
    worker = start_worker("-Q", queue_name, "--http-port", str(port), app=APP)
    assert get(port, "/readyz")[0] == 200
    _rabbitmq("stop_app")
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 503, 30, what="/readyz false")
        _, body = get(port, "/readyz")
        assert "broker" in body
        assert get(port, "/healthz")[0] == 200  # alive: restarting it would not help
    finally:
        _rabbitmq("start_app")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 60, what="/readyz true again")
    assert value(samples(port), "asyncworker_broker_reconnects_total") >= 1
    assert worker.proc.poll() is None


def _ping(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncworker", "ping", *args], cwd=REPO,
                          env=process_env(), capture_output=True, text=True, timeout=30)


def test_ping_exit_status(start_worker: Any, queue_name: str) -> None:
    port = free_port()
    node = f"ping-{queue_name}@test"
    start_worker("-Q", queue_name, "-n", node, "--http-port", str(port), app=APP)
    assert _ping("--http-port", str(port)).returncode == 0
    # A probe may miss once (a shared broker under load); it must answer within a few tries.
    replies: list[subprocess.CompletedProcess[str]] = []
    try:
        wait_for(lambda: replies.append(_ping("-A", APP, "-n", node, "--timeout", "3"))
                 or replies[-1].returncode == 0, 30, what="a mailbox ping answered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {replies[-1].stderr}") from None
    assert "pong" in replies[-1].stdout
    assert _ping("--http-port", str(free_port()), "--timeout", "1").returncode == 1
    nobody = _ping("-A", APP, "-n", f"nobody-{queue_name}@test", "--timeout", "1")
    assert nobody.returncode == 1
    assert "no reply" in nobody.stderr


# -- celery-exporter over a mixed fleet ------------------------------------------------

@pytest.fixture
def exporter_python() -> Path:
    if not EXPORTER_PYTHON.exists():
        reason = (f"celery-exporter is not installed in {EXPORTER_PYTHON.parent.parent} "
                  "(deploy/local/setup.sh installs it)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return EXPORTER_PYTHON


@pytest.fixture
def vhost(services: dict[str, str]) -> str:
    """A RabbitMQ vhost of this test's own: celery-exporter broadcasts ``inspect``
    to every worker it can reach, and must see only this fleet."""
    return own_vhost("asyncworker-monitoring")


@pytest.fixture
def celery_worker_with_events(vhost: str, tmp_path: Path) -> Iterator[str]:
    """A real Celery worker sending events (-E, heartbeats on); yields its queue."""
    queue = f"cw.{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, CELERY_BROKER_URL=vhost,
               CELERY_RESULT_BACKEND="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    log = open(tmp_path / "celery.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.apps.celery_worker:app", "worker",
         "-P", "solo", "-Q", queue, "-n", f"cw@celery-{queue}", "-E", "--without-mingle",
         "--without-gossip", "-l", "INFO"], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    yield queue
    proc.terminate()
    proc.wait(30)
    log.close()


def test_celery_exporter_sees_both_workers(start_worker: Any, queue_name: str, vhost: str,
                                           exporter_python: Path,
                                           celery_worker_with_events: str,
                                           tmp_path: Path) -> None:
    from celery import Celery

    celery_queue = celery_worker_with_events
    client = Celery("client", broker=vhost)
    port = free_port()
    log = open(tmp_path / "exporter.log", "wb")  # noqa: SIM115
    exporter = subprocess.Popen(
        [str(exporter_python), "-c", "from src.cli import cli; cli()",
         "--broker-url", vhost, "--host", "127.0.0.1", "--port", str(port),
         "--retry-interval", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: get(port, "/metrics")[0] == 200, 30, what="exporter up")
        # Task events and heartbeats on (Celery's -E).
        start_worker("-Q", queue_name, "-n", f"aw@asyncworker-{queue_name}", app=APP,
                     broker_url=vhost, worker_send_task_events="true")
        hosts = {"celery": f"celery-{celery_queue}", "asyncworker": f"asyncworker-{queue_name}"}
        sends = [("celery_side.describe", [], celery_queue),
                 ("celery_side.fail", ["x"], celery_queue),
                 ("mon.ok", [1], queue_name), ("mon.fail", [], queue_name)]
        for name, args, queue in sends:
            client.send_task(name, args, queue=queue)
        series = ["celery_task_received_total", "celery_task_started_total",
                  "celery_task_succeeded_total", "celery_task_failed_total",
                  "celery_task_rejected_total", "celery_task_revoked_total",
                  "celery_task_retried_total", "celery_task_runtime_count",
                  "celery_worker_up", "celery_worker_tasks_active"]

        def missing() -> list[str]:
            status, text = get(port, "/metrics", timeout=10)
            if status != 200:  # e.g. an `inspect stats` reply it cannot read
                return [f"/metrics answered {status}"]
            found = parse(text)
            seen = {(name, dict(labels).get("hostname")) for name, labels in found}
            return [f"{name}{{hostname={host}}}" for name in series
                    for host in hosts.values() if (name, host) not in seen]
        try:
            wait_for(lambda: not missing(), 45, interval=0.5, what="every exporter series")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing: {missing()}") from None
        found = samples(port)
        for host in hosts.values():
            assert value(found, "celery_worker_up", hostname=host) == 1
    finally:
        exporter.terminate()
        exporter.wait(30)
        log.close()
