"""The latency method's arithmetic: open-loop schedule, send stamps, warm-up split."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.latency import (
    curve_markdown,
    due,
    latencies_ms,
    parse_stamp,
    stamp_id,
    summary,
    worst_second,
)


def test_open_loop_schedule_sends_on_its_own_clock() -> None:
    # 1,000/s: message i is due at i ms, the first at once; never more than asked for.
    assert due(1000, -0.1, 50) == 0
    assert due(1000, 0.0, 50) == 1
    assert due(1000, 0.0105, 50) == 11
    assert due(1000, 10.0, 50) == 50
    # A late wake-up sends every message that came due meanwhile (no skipping, no waiting).
    assert due(200, 0.5, 1000) == 101


def test_send_stamp_travels_in_the_task_id() -> None:
    task_id = stamp_id("half", 7, 1_796_000_000_123_456_789)
    assert parse_stamp(task_id, "half") == (7, 1_796_000_000.123456789)
    assert parse_stamp(task_id, "curve50") is None
    assert parse_stamp("half-x-1", "half") is None
    assert parse_stamp("3f1c-uuid", "half") is None
    # A prefix that is the start of another one does not match it.
    assert parse_stamp(stamp_id("curve25", 1, 5), "curve2") is None


def test_latencies_split_at_the_end_of_the_warm_up() -> None:
    sent = 1_796_000_000.0

    def row(seq: int, offset: float, ms: float) -> tuple[str, datetime]:
        done = datetime.fromtimestamp(sent + offset + ms / 1000, UTC).replace(tzinfo=None)
        return stamp_id("p", seq, round((sent + offset) * 1e9)), done

    rows = [row(0, 0.0, 80.0), row(1, 0.5, 60.0), row(2, 2.0, 4.0), row(3, 3.0, 6.0),
            ("other-1-5", datetime(2026, 1, 1))]
    warm, steady = latencies_ms(rows, "p", sent + 2.0)
    assert [round(v) for v in warm] == [60, 80]
    assert [round(v) for v in steady] == [4, 6]


def test_worst_second_needs_enough_tasks_in_a_second() -> None:
    calm = [(100.0 + i / 100, 2.0) for i in range(100)]
    stall = [(101.0 + i / 100, 2.0 if i < 90 else 300.0) for i in range(100)]
    assert worst_second([*calm, *stall]) == 300.0
    assert worst_second([(5.0, 900.0)] * 19) is None  # too few to have a p99


def test_summary_percentiles_and_empty() -> None:
    values = [float(v) for v in range(1, 201)]
    assert summary(values) == {"p50_ms": 100.0, "p95_ms": 190.0, "p99_ms": 198.0,
                               "max_ms": 200.0}
    assert summary([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}


def test_curve_table_only_for_rows_with_a_curve() -> None:
    point = {"fraction": 0.5, "rate": 1400.0, "sent_rate": 1399.0, "p50_ms": 3.0,
             "p95_ms": 6.5, "p99_ms": 11.2, "max_ms": 30.0, "tasks": 7000,
             "warmup_p99_ms": 80.0, "notes": []}
    results = [{"workload": "noop", "config": "asyncworker -c 100", "latency_curve": [point]},
               {"workload": "noop", "config": "prefork -c 2", "latency_curve": []}]
    table = curve_markdown(results)
    assert "| noop | asyncworker -c 100 | 50% | 1,400, 1,399, 0 | 3.0 | 6.5 | 11.2 | – | 80.0 |" \
        in table
    assert "prefork" not in table
    assert curve_markdown(results[1:]) == ""
