"""``python -m bench compare``: figures matched across two runs, ratios and verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.compare import Line, compare, figures, main


def run(throughput: float, cpu: float, p99: float, extra_row: bool = False) -> dict[str, Any]:
    rows = [{"workload": "noop", "config": "asyncworker -c 100", "throughput": throughput,
             "cpu_ms_per_task": cpu, "peak_rss_mb": 50.0, "latency_p50_ms": 2.0,
             "latency_p95_ms": 5.0, "latency_p99_ms": p99, "errors": 0,
             "latency_curve": [{"fraction": 0.25, "p50_ms": 1.0, "p95_ms": 2.0,
                                "p99_ms": 3.0}]}]
    if extra_row:
        rows.append({"workload": "noop", "config": "prefork -c 2", "throughput": 500.0})
    return {"results": rows, "floors": {"amqp_consume_ack_per_s": 8000.0}}


def test_figures_of_every_bench_file_kind() -> None:
    found = figures(run(5000, 0.2, 12))
    assert found[("noop", "asyncworker -c 100", "throughput")] == 5000
    assert found[("noop", "asyncworker -c 100", "p99_ms at 25%")] == 3.0
    assert found[("floors", "", "floor:amqp_consume_ack_per_s")] == 8000
    processes = figures({"medians": {"2": {"throughput": 6684.0, "rabbitmq_cores": 0.45}}})
    assert processes == {("noop", "--processes 2", "throughput"): 6684.0,
                         ("noop", "--processes 2", "rabbitmq_cores"): 0.45}
    curves = figures({"points": [{"workload": "sleep", "worker": "asyncworker",
                                  "concurrency": 100, "throughput": 990.0, "notes": []}]})
    assert curves[("sleep", "asyncworker", "throughput")] == 990.0


def test_ratio_and_direction() -> None:
    lines = {line.key[2]: line for line in compare(run(5000, 0.2, 20), run(5500, 0.18, 30))}
    assert lines["throughput"].ratio == pytest.approx(1.1)
    assert lines["throughput"].verdict(0.05) == "better"
    assert lines["cpu_ms_per_task"].verdict(0.05) == "better"  # less CPU
    assert lines["latency_p99_ms"].verdict(0.05) == "worse"  # more latency
    assert lines["peak_rss_mb"].verdict(0.05) == ""
    assert lines["throughput"].verdict(0.2) == ""  # within the tolerance


def test_zero_and_missing() -> None:
    key = ("noop", "x", "errors")
    assert Line(key, 0.0, 0.0).ratio == 1.0
    assert Line(key, 0.0, 3.0).ratio == math.inf
    assert Line(key, 0.0, 3.0).verdict(0.05) == "worse"
    assert Line(key, None, 3.0).ratio is None
    assert Line(key, None, 3.0).verdict(0.05) == ""


def test_command_prints_ratios_and_fails_on_worse(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(run(5000, 0.2, 20)))
    new.write_text(json.dumps(run(4000, 0.2, 20, extra_row=True)))
    assert main([str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "| noop | asyncworker -c 100 | throughput | 5,000.0 | 4,000.0 | 0.80× | worse |" in out
    assert "Only in new: noop / prefork -c 2." in out
    assert main([str(old), str(new), "--fail-on-worse"]) == 1
    assert main([str(old), str(old), "--fail-on-worse"]) == 0
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert main([str(empty), str(new)]) == 2
