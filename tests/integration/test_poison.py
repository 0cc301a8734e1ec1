"""A poison message (a late-ack task that SIGKILLs its worker) under a supervisor.

The worker runs in a subprocess that a supervisor loop in the test starts
again whenever it dies, counting the restarts. A real Celery client sends
one poison task among 200 ordinary late-ack tasks, some running beside it
when it strikes (bystanders). The poison ends FAILURE ``WorkerLostError``
(the default) or dead-lettered with the reason ``poison`` (with
``reject_on_worker_lost``); every ordinary task succeeds; restarts stay
bounded. A real Celery prefork worker given the same poison stores a result
that reads identically through the Celery client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BROKER_URL,
    PG_DSN,
    REPO,
    WorkerProcess,
    process_env,
    result_of,
    task_rows,
    wait_for,
)

pytestmark = pytest.mark.integration

NORMAL = 200
POISON_AT = 60


class Supervisor:
    """Keeps one worker process running: starts another whenever it dies."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.args, self.env, self.log_dir = args, env, log_dir
        self.workers: list[WorkerProcess] = []
        #: Exit codes of the workers that died on their own.
        self.deaths: list[int] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Start the first worker and the loop that restarts it."""
        self._spawn()
        self.workers[0].wait_ready()
        self._thread.start()

    def _spawn(self) -> WorkerProcess:
        worker = WorkerProcess(self.args, self.env,
                               self.log_dir / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def _loop(self) -> None:
        while True:
            code = self.workers[-1].proc.wait()
            with self._lock:
                if self._stopping:
                    return
                self.deaths.append(code)
                self._spawn()

    def stop(self) -> None:
        """Stop the loop, then the running worker (warm)."""
        with self._lock:
            self._stopping = True
        for worker in self.workers:
            worker.stop()
        self._thread.join(30)

    def lines(self, event: str) -> list[dict[str, Any]]:
        """Log lines of every worker so far whose event is ``event``."""
        return [line for w in self.workers for line in w.events(event)]


def dlq_list(queue: str) -> list[dict[str, Any]]:
    """``asyncworker dlq list`` (no dead-letter queue at all: none)."""
    done = subprocess.run([sys.executable, "-m", "asyncworker", "dlq", "list", queue],
                          cwd=REPO, env=dict(os.environ, ASYNCWORKER_BROKER_URL=BROKER_URL),
                          capture_output=True, text=True, timeout=60)
    if done.returncode and "NOT_FOUND" in done.stderr:
        return []
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def run_scenario(celery_app: Any, queue: str, tmp_path: Path,
                 **settings: Any) -> tuple[Supervisor, Any, list[Any]]:
    """Supervised worker; 200 ordinary tasks with one poison among them."""
    supervisor = Supervisor(
        ["-A", "tests.apps.poison:app", "-Q", queue, "-c", "10"],
        process_env(worker_lost_heartbeat=0.5, **settings), tmp_path)
    supervisor.start()
    normal: list[Any] = []
    poison = None
    for i in range(NORMAL):
        if i == POISON_AT:
            poison = celery_app.send_task("poison.kill", queue=queue)
        normal.append(celery_app.send_task("poison.work", [i, 0.2], queue=queue))
    assert poison is not None
    return supervisor, poison, normal


def assert_all_succeeded(pg: Any, normal: list[Any]) -> None:
    ids = [r.id for r in normal]

    def done() -> bool:
        rows = task_rows(pg, ids)
        return len(rows) == len(ids) and all(r["status"] == "SUCCESS" for r in rows.values())
    wait_for(done, 60, interval=0.5, what="every ordinary task SUCCESS")
    # Through the Celery client too, for a sample.
    assert [result_of(r) for r in normal[POISON_AT - 5:POISON_AT + 5]] == list(
        range(POISON_AT - 5, POISON_AT + 5))


def bystanders(supervisor: Supervisor, poison_id: str) -> set[str]:
    """Tasks that ran isolated after a death, other than the poison."""
    return {line["task_id"] for line in supervisor.lines(
        "task was running when its worker died; running it isolated")} - {poison_id}


def test_default_marks_the_poison_failed_with_worker_lost_error(
        celery_app: Any, queue_name: str, tmp_path: Path, pg: Any) -> None:
    """Celery's default: the poison ends FAILURE WorkerLostError and is acked; bystanders
    run again, isolated, and succeed; two deaths (the first, and the one in isolation)."""
    supervisor, poison, normal = run_scenario(celery_app, queue_name, tmp_path)
    try:
        wait_for(lambda: poison.state == "FAILURE", 60, interval=0.2, what="poison failed")
        from billiard.exceptions import WorkerLostError
        with pytest.raises(WorkerLostError, match="Worker exited prematurely"):
            poison.get(timeout=10, propagate=True)
        assert_all_succeeded(pg, normal)
        assert supervisor.deaths == [-signal.SIGKILL] * 2
        assert bystanders(supervisor, poison.id), "no task ran beside the poison"
        [failed] = supervisor.lines("task killed its worker; marked failed")
        assert failed["task_id"] == poison.id and failed["reason"] == "worker lost"
        assert dlq_list(queue_name) == []
    finally:
        supervisor.stop()


def test_reject_on_worker_lost_dead_letters_the_poison_after_max_redeliveries(
        celery_app: Any, queue_name: str, tmp_path: Path, pg: Any) -> None:
    """With reject_on_worker_lost the poison runs again until it has killed
    worker_max_redeliveries + 1 workers, then it is dead-lettered ``poison``;
    no bystander is dead-lettered and every ordinary task succeeds."""
    supervisor, poison, normal = run_scenario(
        celery_app, queue_name, tmp_path, task_reject_on_worker_lost="true",
        worker_max_redeliveries=2)
    try:
        [letter] = wait_for(lambda: dlq_list(queue_name), 60, interval=0.5,
                            what="poison dead-lettered")
        assert letter["task_id"] == poison.id and letter["reason"] == "poison"
        assert letter["exception"].startswith("WorkerLostError: Worker exited prematurely")
        assert_all_succeeded(pg, normal)
        assert supervisor.deaths == [-signal.SIGKILL] * 3
        assert bystanders(supervisor, poison.id)
        # Clients see the poison failed, as for the default.
        assert poison.state == "FAILURE"
        assert type(poison.result).__name__ == "WorkerLostError"
        assert dlq_list(queue_name) == [letter]
    finally:
        supervisor.stop()


def _stored_meta(pg: Any, task_id: str) -> dict[str, Any]:
    with pg.cursor() as cur:
        cur.execute("SELECT status, result FROM celery_taskmeta WHERE task_id = %s", (task_id,))
        status, raw = cur.fetchone()
    meta = json.loads(bytes(raw))
    return {"status": status, "exc_type": meta["exc_type"], "exc_module": meta["exc_module"]}


def test_stored_result_reads_as_a_celery_prefork_workers(
        celery_app: Any, queue_name: str, tmp_path: Path, pg: Any) -> None:
    """The same poison under a real Celery prefork worker: both stored results are
    FAILURE billiard.exceptions.WorkerLostError, and a Celery client raises it for both."""
    celery_queue = queue_name + ".celery"
    env = dict(os.environ, CELERY_BROKER_URL=BROKER_URL,
               CELERY_RESULT_BACKEND="db+postgresql+psycopg2://" + PG_DSN.split("://", 1)[1])
    log = open(tmp_path / "celery.log", "wb")  # noqa: SIM115 - closed below
    celery = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.apps.celery_worker:app", "worker",
         "-P", "prefork", "-c", "2", "-Q", celery_queue, "-n", f"cw-{celery_queue}@%h",
         "--without-mingle",
         "--without-gossip", "--without-heartbeat", "-l", "INFO"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    supervisor = Supervisor(["-A", "tests.apps.poison:app", "-Q", queue_name, "-c", "4"],
                            process_env(worker_lost_heartbeat=0.5), tmp_path)
    supervisor.start()
    try:
        theirs = celery_app.send_task("celery_side.kill", queue=celery_queue)
        ours = celery_app.send_task("poison.kill", queue=queue_name)
        for result in (theirs, ours):
            wait_for(lambda r=result: r.state == "FAILURE", 60, interval=0.2,
                     what=f"{result.id} failed")
        from billiard.exceptions import WorkerLostError
        for result in (theirs, ours):
            assert type(result.result) is WorkerLostError
            with pytest.raises(WorkerLostError, match=r"^Worker exited prematurely: "):
                result.get(timeout=10)
        assert _stored_meta(pg, ours.id) == _stored_meta(pg, theirs.id) == {
            "status": "FAILURE", "exc_type": "WorkerLostError",
            "exc_module": "billiard.exceptions"}
    finally:
        supervisor.stop()
        celery.terminate()
        celery.wait(30)
        log.close()


def test_a_dropped_broker_link_is_not_a_death(
        celery_app: Any, start_worker: Any, queue_name: str, pg: Any,
        redis_client: Any) -> None:
    """Worker A loses its broker connection mid-run: its running tasks are redelivered,
    some to worker B, which finds A's lease alive and runs them as usual (no suspect,
    no WorkerLostError)."""
    from tests.integration.test_outages import _close_connections_named

    node_a = f"lost-a-{queue_name}@test"
    a = start_worker("-Q", queue_name, "-c", "10", "-n", node_a, worker_lost_heartbeat=0.5)
    ids = [celery_app.send_task("compat.count_runs", [3.0], queue=queue_name).id
           for _ in range(10)]
    wait_for(lambda: all(redis_client.exists(f"runs:{tid}") for tid in ids), 30,
             what="all running on A")
    b = start_worker("-Q", queue_name, "-c", "10", "-n", f"lost-b-{queue_name}@test",
                     worker_lost_heartbeat=0.5)
    _close_connections_named(node_a)
    wait_for(lambda: task_rows(pg, ids) and all(
        r["status"] == "SUCCESS" for r in task_rows(pg, ids).values())
        and len(task_rows(pg, ids)) == 10, 60, interval=0.5, what="all SUCCESS")
    received_on_b = {line["task_id"] for line in b.events("task received")}
    assert received_on_b & set(ids), "nothing was redelivered to B"
    for worker in (a, b):
        assert not worker.events("task was running when its worker died; running it isolated")
        assert not worker.events("task killed its worker; marked failed")
