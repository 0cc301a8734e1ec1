"""Real Flower on a free loopback port, against any broker Celery reads.

Shared by the events tests (RabbitMQ) and the Redis ones, so both check what
Flower itself shows, started one way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO, wait_for
from tests.private_services import free_port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_flower(broker_url: str, log_path: Path) -> Iterator[str]:
    """Flower on ``broker_url``; yields its base URL, stops it afterwards.

    ``--enable_events=false``: a worker run with ``-E`` keeps its events on, and
    Flower's periodic broadcast would otherwise switch on task events in every
    worker on the broker.
    """
    port = free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", broker_url, "flower",
         "--address=127.0.0.1", f"--port={port}", "--enable_events=false",
         "--inspect_timeout=3000"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(log_path.read_text())
        try:
            with urllib.request.urlopen(f"{base}/healthcheck", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 30, interval=0.2, what="flower")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
