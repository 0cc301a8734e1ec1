"""``sentinel://`` on a private Redis master and sentinel: the worker finds the
master through the sentinel, as kombu does, and a Celery client configured
the same way is served."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import WorkerProcess, result_of, wait_for
from tests.private_services import free_port

pytestmark = pytest.mark.integration

RESULTS = "redis://127.0.0.1:6379/6"


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    """A private master and one sentinel watching it (``mymaster``)."""
    master, watcher = free_port(), free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {watcher}\nbind 127.0.0.1\n"
                      f"sentinel monitor mymaster 127.0.0.1 {master} 1\n")
    procs = [subprocess.Popen(["redis-server", "--port", str(master), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(["redis-server", str(config), "--sentinel"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        client = redis.Redis(port=watcher)
        wait_for(lambda: _master(client), 10, what="sentinel up")
        yield f"sentinel://127.0.0.1:{watcher}/3;sentinel://127.0.0.1:{free_port()}/3"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _master(client: redis.Redis) -> Any:
    try:
        return client.sentinel_get_master_addr_by_name("mymaster")
    except redis.ConnectionError:
        return None


def test_tasks_and_control_through_sentinel(sentinel_url: str, queue_name: str,
                                            start_worker: Callable[..., WorkerProcess]) -> None:
    from celery import Celery

    options = {"master_name": "mymaster"}
    start_worker("-Q", queue_name, "-n", f"s-{queue_name}@redis", broker_url=sentinel_url,
                 broker_transport_options=options, result_backend=RESULTS,
                 test_redis_url=RESULTS)
    app = Celery("sentinel-client", broker=sentinel_url, backend=RESULTS)
    app.conf.broker_transport_options = options
    try:
        assert result_of(app.send_task("compat.add_async", args=(20, 22),
                                       queue=queue_name)) == 42
        node = f"s-{queue_name}@redis"
        assert app.control.inspect(destination=[node], timeout=3).ping() == {
            node: {"ok": "pong"}}
    finally:
        app.close()
