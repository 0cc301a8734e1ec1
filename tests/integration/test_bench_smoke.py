"""The benchmark still runs end to end (figures are not checked: speed is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_bench_quick_runs_every_configuration(services: dict[str, str], tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scale", "0.1", "--out", str(tmp_path),
         "--name", "smoke", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    runs = {(r["workload"], r["config"]) for r in data["results"]}
    concurrency = {"sleep": 1000, "vision": 200, "noop": 100}
    assert runs == {(w, f"{kind} -c {c}") for w, c in concurrency.items()
                    for kind in ("asyncworker", "aio-celery", "taskiq")} | {
        ("sleep", "asyncworker -c 1000 redis"), ("noop", "asyncworker -c 100 redis")} | {
        (w, c) for w in ("sleep", "vision", "noop") for c in ("prefork -c 2", "threads -c 100")}
    for run in data["results"]:
        # The notes say why (time budget, latency-phase tasks without a result).
        assert run["tasks_done"] > 0 and run["errors"] == 0, (
            run["workload"], run["config"], run["errors"], run.get("notes"))
        assert run["latency_p50_ms"] is not None and run["peak_rss_mb"] > 0, run
    assert set(data["floors"]) >= {"amqp_consume_ack_per_s", "pg_single_inserts_per_s",
                                   "pg_batched_inserts_per_s", "s3_requests_per_s"}
    table = (tmp_path / "smoke.md").read_text()
    assert all(f"### {w}" in table for w in ("sleep", "vision", "noop"))
    # The asyncio peers' rows are measured, and asyncworker is set against the best of them.
    # (asyncworker's rows of every workload, and its Redis rows of noop and sleep)
    assert table.count("the best asyncio peer's") == 5
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
