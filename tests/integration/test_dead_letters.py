"""Dead letters without a broker DLX: kept in <queue>.dlq with reasons, listed and replayed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.conftest import BROKER_URL, REPO, wait_for

pytestmark = pytest.mark.integration


def dlq_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ASYNCWORKER_BROKER_URL=BROKER_URL)
    return subprocess.run([sys.executable, "-m", "asyncworker", "dlq", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60, check=True)


def listed(queue: str) -> list[dict[str, Any]]:
    out = dlq_cli("list", queue).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_poison_and_rejected_messages_are_kept_and_replayed(
        celery_app: Any, start_worker: Any, queue_name: str, redis_client: Any) -> None:
    start_worker("-Q", queue_name, "-c", "4")
    unknown = celery_app.send_task("no.such.task", [1], queue=queue_name)
    key = f"runs:{uuid.uuid4()}"
    rejecting = celery_app.send_task("compat.reject_once", [key], queue=queue_name)

    letters = wait_for(lambda: len(listed(queue_name)) == 2 and listed(queue_name), 30,
                       what="two dead letters")
    by_id = {x["task_id"]: x for x in letters}
    assert by_id[unknown.id]["reason"] == "unknown task 'no.such.task'"
    assert by_id[unknown.id]["exception"].startswith("NotRegistered")
    assert "Reject" in by_id[rejecting.id]["reason"]
    for letter in letters:
        assert letter["worker"].startswith("asyncworker@") and letter["time"]
        # Where the producer sent it: Celery uses the default exchange for queue=.
        assert (letter["exchange"], letter["routing_key"]) == ("", queue_name)
    # Listing does not consume.
    assert len(listed(queue_name)) == 2

    assert "2 dead letter(s) replayed" in dlq_cli("replay", queue_name).stderr
    # Replayed: the rejecting task now succeeds; the unknown one is dead again.
    assert celery_app.AsyncResult(rejecting.id).get(timeout=30) == 2
    wait_for(lambda: [x["task_id"] for x in listed(queue_name)] == [unknown.id], 30,
             what="unknown task dead again")


def test_exhausted_retries_are_dead_lettered_when_configured(
        celery_app: Any, start_worker: Any, queue_name: str, redis_client: Any) -> None:
    start_worker("-Q", queue_name, "-c", "4", task_dead_letter_on_failure="true")
    key = f"runs:{uuid.uuid4()}"
    result = celery_app.send_task("compat.always_fails", [key], queue=queue_name)
    with pytest.raises(RuntimeError, match="run 2 failed"):
        result.get(timeout=30)
    [letter] = wait_for(lambda: listed(queue_name), 30, what="dead letter")
    assert letter["task_id"] == result.id and letter["reason"] == "retries exhausted"
    assert letter["exception"] == "RuntimeError: run 2 failed"
    dlq_cli("replay", queue_name)
    wait_for(lambda: int(redis_client.get(key)) == 3, 30, what="replayed run")
