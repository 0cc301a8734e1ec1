"""Broker and database connections dropping under load: no loss, no duplicate runs."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.conftest import REPO, task_rows, wait_for

pytestmark = pytest.mark.integration


def _done(pg: Any, ids: list[str]) -> int:
    return sum(1 for row in task_rows(pg, ids).values() if row["status"] == "SUCCESS")


def _kill_worker_db_connections(pg: Any) -> int:
    with pg.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'asyncworker %'")
        return int(cur.fetchone()[0])


def _close_connections_named(name: str) -> None:
    """Close only the worker's AMQP connections (other clients keep theirs)."""
    ctl = [str(REPO / "deploy/local/services.sh"), "rabbitmqctl", "-q"]
    listing = subprocess.run([*ctl, "list_connections", "pid", "client_properties"],
                             check=True, capture_output=True, text=True).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]
    assert pids, f"no connection named {name}: {listing[:500]}"
    for pid in pids:
        subprocess.run([*ctl, "close_connection", pid, "test: broker outage"], check=True)


def test_database_connections_killed_mid_run(celery_app: Any, start_worker: Any,
                                             queue_name: str, pg: Any,
                                             redis_client: Any) -> None:
    worker = start_worker("-Q", queue_name, "-c", "20")
    ids = [celery_app.send_task("compat.count_runs", [0.2], queue=queue_name).id
           for _ in range(150)]
    wait_for(lambda: _done(pg, ids) >= 20, 60, what="first results")
    killed = 0
    for target in (50, 100):
        wait_for(lambda t=target: _done(pg, ids) >= t, 60, what=f"{target} results")
        killed += _kill_worker_db_connections(pg)
    assert killed > 0
    wait_for(lambda: _done(pg, ids) == 150, 90, what="all results after outages")
    assert all(int(redis_client.get(f"runs:{tid}")) == 1 for tid in ids)
    assert worker.proc.poll() is None


def test_broker_connections_closed_mid_run(celery_app: Any, start_worker: Any,
                                           queue_name: str, pg: Any,
                                           redis_client: Any) -> None:
    nodename = f"outage-{queue_name}@test"
    worker = start_worker("-Q", queue_name, "-c", "20", "-n", nodename)
    ids = [celery_app.send_task("compat.count_runs", [1.0], queue=queue_name).id
           for _ in range(60)]
    wait_for(lambda: len(redis_client.keys("runs:*")) and any(
        redis_client.exists(f"runs:{tid}") for tid in ids), 30, what="tasks running")
    _close_connections_named(nodename)
    wait_for(lambda: _done(pg, ids) == 60, 120, what="all results after reconnect")
    wait_for(lambda: worker.events(
        "reconnected to broker; unacked messages will be redelivered"), 30, what="reconnect")
    # Every message whose ack was lost comes back; each copy is recognised.
    lost_acks = {line["task_id"] for line in
                 worker.events("could not settle message; the broker will redeliver it")}
    assert lost_acks

    def redeliveries_settled() -> bool:
        seen = [line["task_id"] for line in worker.lines() if line.get("event") in (
            "redelivered task already finished; acking",
            "redelivered task is still running here; waiting for it")]
        return lost_acks <= set(seen)
    wait_for(redeliveries_settled, 60, what="redelivered copies settled")
    runs = [int(redis_client.get(f"runs:{tid}")) for tid in ids]
    # Redelivered copies of tasks that were running or done were not run again.
    assert runs == [1] * 60
    assert worker.events("connected to broker")
    assert worker.proc.poll() is None
