"""The benchmark's and the chaos runner's Redis-broker parts: which rows and faults
there are, and what the reports say of them."""

from __future__ import annotations

import json
from typing import Any

from bench import chaos, report
from bench.run import BROKER, REDIS_BROKER, configs_for, plan, workloads


def _labels(quick: bool, workload: str) -> dict[str, Any]:
    w = next(w for w in workloads(quick) if w.name == workload)
    return {c.label: c for c in configs_for(w, quick)}


def test_redis_broker_rows_for_noop_and_sleep_noop_alone_when_quick() -> None:
    full_noop, full_sleep = _labels(False, "noop"), _labels(False, "sleep")
    assert {"asyncworker -c 100 redis-broker", "prefork -c 2 redis-broker",
            "prefork -c 8 redis-broker"} <= set(full_noop)
    assert "asyncworker -c 1000 redis-broker" in full_sleep
    assert not [label for label in _labels(False, "vision") if "redis-broker" in label]
    quick_noop = _labels(True, "noop")
    assert {label for label in quick_noop if "redis-broker" in label} == {
        "asyncworker -c 100 redis-broker", "prefork -c 2 redis-broker"}
    assert not [label for label in _labels(True, "sleep") if "redis-broker" in label]
    row = quick_noop["asyncworker -c 100 redis-broker"]
    assert row.broker_url == REDIS_BROKER and quick_noop["asyncworker -c 100"].broker_url == BROKER


def test_no_baseline_twin_for_a_redis_broker_row() -> None:
    noop = [w for w in workloads(True) if w.name == "noop"]
    steps = plan(noop, True, ["redis-broker"], "abc1234", 1)
    assert [c.label for c, _ in steps] == ["asyncworker -c 100 redis-broker",
                                           "prefork -c 2 redis-broker"]


def _row(config: str, kind: str, throughput: float) -> dict[str, Any]:
    return {"config": config, "kind": kind, "throughput": throughput}


def test_report_sets_asyncworker_on_redis_against_prefork_on_redis_and_itself() -> None:
    rows = [_row("asyncworker -c 100", "asyncworker", 6000.0),
            _row("prefork -c 2", "celery", 300.0),
            _row("asyncworker -c 100 redis-broker", "asyncworker", 1500.0),
            _row("prefork -c 2 redis-broker", "celery", 500.0)]
    assert report._redis_broker_lines(rows) == [
        "", "- **asyncworker -c 100 redis-broker** tasks/s: 3.0× prefork -c 2 redis-broker's; "
            "0.25× its own on RabbitMQ (asyncworker -c 100)."]
    assert report._redis_broker_lines(rows[:2]) == []


def test_each_broker_has_its_own_faults_and_shares_the_others() -> None:
    amqp, redis = chaos.faults_for("amqp"), chaos.faults_for("redis")
    assert {"rabbitmq-kill-9", "rabbitmq-stop-app"} <= set(amqp) - set(redis)
    assert {"redis-restart", "redis-kill-9", "malformed-envelopes"} <= set(redis) - set(amqp)
    assert {"worker-kill-9", "pg-down-10s"} <= set(amqp) & set(redis)


def test_unacked_entries_are_counted_for_their_queue() -> None:
    entry = json.dumps([{"body": "e30="}, "", "q1"]).encode()
    assert chaos._unacked_queue(entry) == "q1"
    assert chaos._unacked_queue(b"not json") is None  # counted as anyone's: settle waits


def test_the_table_names_the_broker_and_the_dead_letters() -> None:
    outcome = chaos.Outcome("asyncworker", "late", "malformed-envelopes", 10, broker="redis",
                            dead_lettered=3, dead_letter_reasons=["a", "b", "c"],
                            left_in_queue=0)
    stuck = chaos.Outcome("celery", "late", "malformed-envelopes", 10, broker="redis",
                          lost=["x"], left_in_queue=7)
    table = chaos.markdown([outcome, stuck], "python -m bench.chaos --broker redis", "abc")
    assert "broker redis" in table
    assert "| late | 0 | 0 | 0 | 0 | 1 | 0 | 0 | 0 |" in table
    assert "asyncworker (late ack) 3" in table and "celery (late ack) 0" in table
    assert "celery (malformed-envelopes, late ack) 7" in table
