"""The asyncio peers' rows in the benchmark: their set-up, completion times and report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bench import peers, report
from bench.peers.driver import CeleryRedisSide, TaskiqSide
from bench.run import Config, configs_for, workloads


@pytest.mark.parametrize("quick", [True, False])
def test_every_workload_has_both_peers_at_asyncworkers_concurrency(quick: bool) -> None:
    for workload in workloads(quick):
        rows = configs_for(workload, quick)
        ours = next(c for c in rows if c.kind == "asyncworker")
        assert {c.kind: c.concurrency for c in rows if c.kind in peers.KINDS} == {
            "aio-celery": ours.concurrency, "taskiq": ours.concurrency}


def test_worker_commands_take_the_rows_concurrency_and_prefetch() -> None:
    sleep = next(w for w in workloads(True) if w.name == "sleep")
    aio = peers.command(Config("aio-celery -c 1000", "aio-celery", 1000), sleep)
    assert aio[aio.index("-c") + 1] == "1000" and aio[-1] == "bench.peers.aio_celery_app:app"
    taskiq = peers.command(Config("taskiq -c 1000", "taskiq", 1000), sleep)
    assert taskiq[taskiq.index("--workers") + 1] == "1"
    assert taskiq[taskiq.index("--max-async-tasks") + 1] == "1000"
    # Deliveries held: running + waiting = 4 × concurrency, as the other rows' prefetch.
    assert taskiq[taskiq.index("--max-prefetch") + 1] == "3000"
    vision = next(w for w in workloads(True) if w.name == "vision")
    assert "bench.peers.taskiq_vision:broker" in peers.command(
        Config("taskiq -c 200", "taskiq", 200), vision)


def test_completion_times_are_naive_utc_from_either_result_format() -> None:
    done = datetime(2026, 11, 30, 12, 0, 0, 250000)
    celery_format = json.loads(json.dumps(
        {"status": "SUCCESS", "date_done": done.replace(tzinfo=UTC).isoformat()}))
    assert CeleryRedisSide.__new__(CeleryRedisSide).finished_at(celery_format) == done
    side = TaskiqSide.__new__(TaskiqSide)
    stamp = done.replace(tzinfo=UTC).timestamp()
    assert side.finished_at({"return_value": stamp}) == done
    assert side.finished_at({"return_value": {"finished_at": stamp, "analysis": {}}}) == done
    assert side.succeeded({"is_err": False}) and not side.succeeded({"is_err": True})


def _row(config: str, kind: str, throughput: float, **extra: Any) -> dict[str, Any]:
    return {"config": config, "kind": kind, "workload": "noop", "throughput": throughput,
            "littles_law_ideal": None, "latency_p50_ms": 1.0, "latency_p95_ms": 2.0,
            "latency_p99_ms": 3.0, "peak_rss_mb": 50.0, "cpu_ms_per_task": 0.5, "errors": 0,
            "notes": [], **extra}


def test_report_sets_asyncworker_against_prefork_and_the_best_peer() -> None:
    data = {"when": "now", "command": "python -m bench", "duration_s": 1.0, "gpt_latency": "",
            "floors": {}, "machine": {"cores": 2, "cpu": "x", "memory_gb": 1, "python": "3.11",
                                      "celery": "5", "postgresql": "16",
                                      "postgresql_fsync": "on"},
            "results": [_row("asyncworker -c 100", "asyncworker", 3000.0),
                        _row("aio-celery -c 100", "aio-celery", 1000.0),
                        _row("taskiq -c 100", "taskiq", 1500.0, cpu_ms_per_task=1.0),
                        _row("ghost -c 100", "taskiq", 0.0, cannot="no such thing"),
                        _row("prefork -c 2", "celery", 300.0)]}
    table = report.markdown(data)
    assert "| ghost -c 100 | – cannot: no such thing |" in table
    assert ("- **asyncworker -c 100** tasks/s: 10.0× prefork -c 2's; 2.00× the best asyncio "
            "peer's (taskiq -c 100), at 0.50× its CPU per task and 1.00× its peak RSS.") in table
    asyncworker_row = next(line for line in table.splitlines()
                           if line.startswith("| **asyncworker"))
    assert "| 2.00× |" in asyncworker_row  # vs best peer


def test_a_cannot_row_has_as_many_cells_as_the_header() -> None:
    row = report._cannot_row({"config": "x", "cannot": "why"})
    assert row.count("|") == report.HEADER.count("|")


def test_baseline_twins_are_for_asyncworkers_own_rows_only() -> None:
    from bench.run import plan

    steps = plan([w for w in workloads(True) if w.name == "noop"], True, [], "abc1234", 1)
    labels = [c.label for c, _ in steps]
    assert "asyncworker@abc1234 -c 100" in labels
    assert "asyncworker -c 100 redis" in labels
    assert not any("@" in label and "redis" in label for label in labels)
    assert not any("@" in label for label in labels if "aio-celery" in label or "taskiq" in label)
