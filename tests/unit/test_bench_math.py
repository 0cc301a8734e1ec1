"""The benchmark's arithmetic: steady-state rate and percentiles."""

from __future__ import annotations

from datetime import datetime, timedelta

from bench.measure import percentile
from bench.run import steady_rate


def test_steady_rate_ignores_a_stall_at_the_start() -> None:
    start = datetime(2026, 1, 1)
    # 1,000 completions at 100/s, after a 30 s stall before the first few.
    done = [start] * 5 + [start + timedelta(seconds=30 + i / 100) for i in range(995)]
    assert 99 <= steady_rate(done) <= 101
    first_to_last = (len(done) - 1) / (done[-1] - done[0]).total_seconds()
    assert first_to_last < 30  # what a first-to-last figure would have said


def test_steady_rate_small_and_degenerate() -> None:
    start = datetime(2026, 1, 1)
    assert steady_rate([]) == 0.0
    assert steady_rate([start]) == 0.0
    assert steady_rate([start, start]) == 0.0
    assert steady_rate([start, start + timedelta(seconds=2)]) == 0.5


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0


def test_noop_share_of_the_amqp_floor() -> None:
    """The report gives this tree's noop rows as a percentage of each AMQP floor."""
    from bench.report import floor_share_lines

    rows = [{"config": "asyncworker -c 100", "kind": "asyncworker", "workload": "noop",
             "throughput": 6000.0},
            {"config": "asyncworker@abc -c 100", "kind": "asyncworker", "workload": "noop",
             "throughput": 5000.0, "baseline": "abc"},
            {"config": "prefork -c 2", "kind": "celery", "workload": "noop", "throughput": 500.0}]
    data = {"floors": {"amqp_consume_ack_per_s": 8000,
                       "amqp_consume_ack_same_messages_per_s": 7500}, "results": rows}
    lines = floor_share_lines(data)
    assert lines[-1] == "| asyncworker -c 100 | 6,000 | 75% | 80% |"
    assert len([line for line in lines if line.startswith("| asyncworker")]) == 1
    assert floor_share_lines({"floors": {}, "results": rows}) == []


def test_profile_summary_charges_self_time_to_libraries() -> None:
    """py-spy's collapsed stacks: the leaf frame's file names the library."""
    from bench.floor_ratio import summarize

    main = "main (/x/asyncworker/worker/consumer.py:1)"
    raw = f"{main};decode (/v/site-packages/pamqp/decode.py:9) 3\n{main} 1\n"
    text = summarize(raw)
    assert "75.0%  pamqp" in text and "25.0%  asyncworker" in text


def test_batch_sizes_scraped_from_the_metrics_page() -> None:
    """Rows per result batch: the histogram's count, sum and mean."""
    import http.server
    import threading

    from bench.floor_ratio import scrape_batch_sizes

    page = (b'asyncworker_result_batch_size_bucket{le="100.0"} 4.0\n'
            b"asyncworker_result_batch_size_count 4.0\n"
            b"asyncworker_result_batch_size_sum 250.0\n"
            b"other_metric 1.0\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sizes = scrape_batch_sizes(server.server_address[1])
    finally:
        server.shutdown()
    assert sizes["count"] == 4 and sizes["sum"] == 250
    assert sizes["mean_rows_per_batch"] == 62.5
    assert sizes['bucket{le="100.0"}'] == 4


def test_repeated_runs_keep_every_p99_so_the_worst_is_reported() -> None:
    from dataclasses import asdict

    from bench.report import _with_spread
    from bench.run import Result, merge

    runs = [Result("asyncworker -c 100", "asyncworker", "noop", 100, throughput=t,
                   latency_p99_ms=p99) for t, p99 in ((100.0, 4.0), (120.0, 19.0), (110.0, 6.0))]
    row = merge(runs)
    assert row.latency_p99_ms == 6.0  # the median
    assert row.latency_p99_ms_runs == [4.0, 19.0, 6.0]
    assert _with_spread(asdict(row), "latency_p99_ms") == "6 (4–19)"


def test_configs_filter_by_part_kind_or_exact_label() -> None:
    from bench.run import Config, selected

    plain = Config("asyncworker -c 100", "asyncworker", 100)
    uvloop = Config("asyncworker -c 100 uvloop", "asyncworker", 100, "uvloop")
    assert selected(plain, ["asyncworker -c 100"]) and selected(uvloop, ["asyncworker -c 100"])
    assert selected(plain, ["=asyncworker -c 100"])
    assert not selected(uvloop, ["=asyncworker -c 100"])
    assert selected(uvloop, ["celery", "=asyncworker -c 100 uvloop"])
