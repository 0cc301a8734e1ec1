"""``worker --processes N``: a supervisor and N real worker processes on RabbitMQ and
PostgreSQL, fed and read by a real Celery client."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import WorkerProcess, result_of, task_rows, wait_for
from tests.integration.test_monitoring import free_port, get, samples, value

pytestmark = pytest.mark.integration


def start_group(start_worker: Any, queue: str, *args: str, ready: bool = True,
                **settings: Any) -> WorkerProcess:
    """``worker --processes 2`` on ``queue``, node names ``proc-1@<queue>``, ``proc-2@…``."""
    group = start_worker("-Q", queue, "-n", f"proc@{queue}", "--processes", "2", *args,
                         wait=False, **settings)
    if ready:
        wait_for(lambda: _alive(group) and len(group.events("worker ready")) >= 2, 60,
                 what="both children ready")
    return group


def _alive(group: WorkerProcess) -> bool:
    if group.proc.poll() is not None:
        raise AssertionError(f"supervisor exited {group.proc.returncode}:\n"
                             + group.log_path.read_text())
    return True


def children(group: WorkerProcess) -> dict[str, int]:
    """Node name → pid of the latest start of each child."""
    return {line["nodename"]: line["pid"] for line in group.events("child started")}


@pytest.fixture
def failing_startup() -> Iterator[Any]:
    """Set ``COMPAT_FAIL_STARTUP`` for the processes a test starts."""
    def set_to(how: str) -> None:
        os.environ["COMPAT_FAIL_STARTUP"] = how
    yield set_to
    os.environ.pop("COMPAT_FAIL_STARTUP", None)


def test_tasks_spread_over_both_children(celery_app: Any, start_worker: Any,
                                         queue_name: str) -> None:
    group = start_group(start_worker, queue_name, "-c", "5")
    results = [celery_app.send_task("compat.whoami", [0.05], queue=queue_name)
               for _ in range(40)]
    ran = [result_of(r) for r in results]
    nodes = {r["hostname"] for r in ran}
    assert nodes == {f"proc-1@{queue_name}", f"proc-2@{queue_name}"}
    pids = {r["pid"] for r in ran}
    assert pids == set(children(group).values())
    assert group.proc.pid not in pids  # the supervisor runs no task


def test_a_killed_child_is_restarted_while_the_other_works(
        celery_app: Any, start_worker: Any, queue_name: str, pg: Any) -> None:
    group = start_group(start_worker, queue_name, "-c", "5")
    first = f"proc-1@{queue_name}"
    old = children(group)
    os.kill(old[first], signal.SIGKILL)
    during = [celery_app.send_task("compat.whoami", queue=queue_name) for _ in range(20)]
    wait_for(lambda: children(group)[first] != old[first], 30, what="child 1 restarted")
    died = group.events("child died; restarting")
    assert [(d["nodename"], d["signal"]) for d in died] == [(first, "SIGKILL")]
    assert all(result_of(r) for r in during)  # none waited for the dead child
    rows = task_rows(pg, [r.id for r in during])
    assert {row["status"] for row in rows.values()} == {"SUCCESS"} and len(rows) == 20
    wait_for(lambda: len(group.events("worker ready")) >= 3, 60, what="restarted child ready")
    after = [result_of(celery_app.send_task("compat.whoami", [0.05], queue=queue_name))
             for _ in range(30)]
    assert {r["pid"] for r in after} == set(children(group).values())
    assert {r["hostname"] for r in after} == {first, f"proc-2@{queue_name}"}


def test_sigterm_drains_both_children(celery_app: Any, start_worker: Any, queue_name: str,
                                      pg: Any) -> None:
    group = start_group(start_worker, queue_name, "-c", "10")
    sent = [celery_app.send_task("compat.sleep_late", [2.0], queue=queue_name).id
            for _ in range(16)]

    def all_started() -> bool:
        rows = task_rows(pg, sent).values()
        return len(rows) == 16 and {row["worker"] for row in rows} == {
            f"proc-1@{queue_name}", f"proc-2@{queue_name}"}

    wait_for(all_started, 30, what="every task started, on both children")
    group.signal(signal.SIGTERM)
    assert group.wait_exit(60) == 0
    rows = task_rows(pg, sent)
    assert {row["status"] for row in rows.values()} == {"SUCCESS"} and len(rows) == 16
    stopped = group.events("child stopped")
    assert sorted(s["nodename"] for s in stopped) == [f"proc-1@{queue_name}",
                                                      f"proc-2@{queue_name}"]
    assert {s["exit_code"] for s in stopped} == {0}
    assert not group.events("child died; restarting")


def test_a_crash_loop_is_reported_and_spaced_out(start_worker: Any, queue_name: str,
                                                 failing_startup: Any) -> None:
    failing_startup("1")  # every child's lifespan hook fails: exit 1 at each start
    group = start_group(start_worker, queue_name, ready=False)
    wait_for(lambda: _alive(group) and group.events("child crash loop: it keeps dying; "
                                                    "restarts are spaced out"),
             90, what="the crash-loop ERROR")
    first = f"proc-1@{queue_name}"
    deaths = [d for d in group.events("child died; restarting") if d["nodename"] == first]
    assert all(d["exit_code"] == 1 for d in deaths)
    pauses = [d["restart_in"] for d in deaths]
    assert len(pauses) >= 2 and pauses == sorted(pauses) and pauses[-1] > pauses[0]
    loop = [e for e in group.events("child crash loop: it keeps dying; restarts are "
                                    "spaced out") if e["nodename"] == first]
    assert len(loop) <= 1 and all(e["level"] == "error" for e in loop)
    assert not group.events("worker ready")
    group.signal(signal.SIGTERM)  # children waiting to restart are not started again
    assert group.wait_exit(30) == 0


def test_a_configuration_error_stops_the_group(start_worker: Any, queue_name: str,
                                               failing_startup: Any) -> None:
    failing_startup("config")  # the lifespan hook raises ImproperlyConfigured: exit 2
    group = start_group(start_worker, queue_name, ready=False)
    assert group.wait_exit(60) == 2
    errors = group.events("child exited with a configuration error; stopping the group")
    assert errors and errors[0]["exit_code"] == 2
    assert not group.events("child died; restarting")
    assert len(group.events("child started")) == 2  # nothing restarted


def test_the_group_serves_one_metrics_endpoint(celery_app: Any, start_worker: Any,
                                               queue_name: str) -> None:
    port = free_port()
    group = start_group(start_worker, queue_name, "-c", "5", "--http-port", str(port))
    labels = {"name": "compat.whoami", "hostname": queue_name, "queue_name": queue_name}
    ran = [result_of(celery_app.send_task("compat.whoami", [0.05], queue=queue_name))
           for _ in range(30)]
    assert len({r["hostname"] for r in ran}) == 2
    wait_for(lambda: value(samples(port), "celery_task_succeeded_total", **labels) == 30,
             10, what="the group's count")
    # Each child's own endpoint (a free loopback port, logged) holds its share.
    own = [line["port"] for line in group.events("monitoring server listening")
           if line["port"] != port]
    shares = [value(samples(p), "celery_task_succeeded_total", **labels) for p in own]
    assert len(shares) == 2 and all(s > 0 for s in shares) and sum(shares) == 30
    found = samples(port)
    assert value(found, "celery_worker_up", hostname=queue_name) == 1
    assert value(found, "asyncworker_concurrency_limit") == 10  # 5 per child, summed
    assert value(found, "asyncworker_group_processes_running") == 2
    assert get(port, "/healthz")[0] == 200
    wait_for(lambda: get(port, "/readyz")[0] == 200, 10, what="the group ready")

    # A child's death neither loses its counts nor leaves its gauges behind.
    first = f"proc-1@{queue_name}"
    old = children(group)[first]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: get(port, "/readyz")[0] == 503, 10, what="the group not ready")
    wait_for(lambda: children(group)[first] != old, 30, what="child 1 restarted")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 60, what="the group ready again")
    found = samples(port)
    assert value(found, "celery_task_succeeded_total", **labels) == 30
    assert value(found, "asyncworker_concurrency_limit") == 10
    assert value(found, "asyncworker_group_restarts_total", nodename=first) == 1
