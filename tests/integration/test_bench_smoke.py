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
        # The Redis-broker pair (noop only with --quick).
        ("noop", "asyncworker -c 100 redis-broker"), ("noop", "prefork -c 2 redis-broker")} | {
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
    assert table.count("the best asyncio peer's (") == 5
    assert "- **asyncworker -c 100 redis-broker** tasks/s: " in table
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_latency_curve_sleep_curve_and_compare(services: dict[str, str],
                                                     tmp_path: Path) -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                                   capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        return completed

    common = ("--quick", "--scale", "0.1", "--workloads", "noop", "--configs", "asyncworker",
              "--out", str(tmp_path), "--no-progress")
    bench("bench", *common, "--name", "old")
    bench("bench", *common, "--name", "new", "--latency-curve")
    new = json.loads((tmp_path / "new.json").read_text())
    (row,) = [r for r in new["results"] if r["config"] == "asyncworker -c 100"]
    assert [p["fraction"] for p in row["latency_curve"]] == [0.25, 0.5, 0.75, 0.9]
    assert all(p["tasks"] > 0 and p["missing"] == 0 and p["p99_ms"] is not None
               for p in row["latency_curve"]), row["latency_curve"]
    assert "### Latency, point by point" in (tmp_path / "new.md").read_text()
    assert (tmp_path / "new-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    compared = bench("bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"))
    assert "| noop | asyncworker -c 100 | throughput |" in compared.stdout

    bench("bench.curves", "sleep", "--concurrency", "100", "--scale", "0.1",
          "--out", str(tmp_path))
    (point,) = json.loads((tmp_path / "curves-sleep.json").read_text())["points"]
    assert point["done"] > 0 and point["rabbitmq_cores"] >= 0 and point["peak_rss_mb"] > 0
    assert (tmp_path / "curves-sleep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
