"""App lifespan hooks: one shared resource per worker, open before tasks, closed after."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_shared_resource_lives_for_the_worker(celery_app: Any, start_worker: Any,
                                              queue_name: str, redis_client: Any) -> None:
    marker = f"lifespan:{uuid.uuid4()}"
    os.environ["COMPAT_LIFESPAN_MARKER"] = marker
    try:
        worker = start_worker("-Q", queue_name, "-c", "10")
    finally:
        del os.environ["COMPAT_LIFESPAN_MARKER"]
    keys = [f"state:{uuid.uuid4()}" for _ in range(5)]
    opened = {celery_app.send_task("compat.uses_state", [k], queue=queue_name).get(timeout=30)
              for k in keys}
    assert len(opened) == 1 and opened.pop() <= time.time()  # one client for every task
    assert all(redis_client.get(k) == b"from task" for k in keys)
    assert redis_client.get(marker) is None  # still open
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    assert redis_client.get(marker) == b"closed"


def test_failing_startup_exits_with_an_error(start_worker: Any, queue_name: str) -> None:
    os.environ["COMPAT_FAIL_STARTUP"] = "1"
    try:
        worker = start_worker("-Q", queue_name, wait=False)
    finally:
        del os.environ["COMPAT_FAIL_STARTUP"]
    assert worker.wait_exit(60) == 1
    wait_for(lambda: worker.events("worker stopped on an error"), 5, what="error line")
    assert not worker.events("worker ready")
