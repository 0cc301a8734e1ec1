"""``broker_url`` failover lists: parsing, the order URLs are tried in, redaction."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from asyncworker import broker as brokers
from asyncworker.backoff import BackoffPolicy, Outage
from asyncworker.broker.amqp import AmqpBroker
from asyncworker.broker.urls import Failover, redact, split
from asyncworker.control import describe
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.logging import redact_url
from asyncworker.settings import Settings, load

A, B, C = "amqp://u:pa@a:5672//", "amqp://u:pb@b:5672//", "amqp://u:pc@c:5672//"


def test_split_takes_kombus_forms() -> None:
    assert split(A) == [A]
    assert split(f"{A};{B}; {C} ;") == [A, B, C]
    assert split([A, f"{B};{C}"]) == [A, B, C]
    with pytest.raises(ImproperlyConfigured):
        split(" ; ")


def test_every_password_is_redacted() -> None:
    assert redact(f"{A};{B}") == "amqp://u:***@a:5672//;amqp://u:***@b:5672//"
    assert redact([A, C]) == "amqp://u:***@a:5672//;amqp://u:***@c:5672//"
    # The generic redaction (settings dumps, log fields) too.
    assert redact_url(f"{A};{B}") == "amqp://u:***@a:5672//;amqp://u:***@b:5672//"


def test_round_robin_goes_down_the_list_and_backs_off_after_a_full_round() -> None:
    failover = Failover([A, B, C])
    assert failover.current == A
    assert [failover.failed() for _ in range(6)] == [False, False, True] * 2
    assert failover.current == A
    failover.advance()  # a dropped connection moves on without counting a failure
    assert failover.current == B
    assert failover.failed() is False and failover.current == C
    failover.succeeded()
    assert [failover.failed() for _ in range(3)] == [False, False, True]


def test_shuffle_tries_every_url_once_per_round_and_not_the_failed_one_again() -> None:
    failover = Failover([A, B, C], "shuffle", random.Random(7))
    for _ in range(20):
        seen = [failover.current]
        for _ in range(2):
            failover.failed()
            seen.append(failover.current)
        assert sorted(seen) == sorted([A, B, C])
        last = failover.current
        assert failover.failed() is True
        assert failover.current != last
    starts = {Failover([A, B, C], "shuffle", random.Random(seed)).current for seed in range(30)}
    assert starts == {A, B, C}  # clients started together spread over the nodes


def test_unknown_strategy_and_one_url() -> None:
    with pytest.raises(ImproperlyConfigured, match="round-robin, shuffle"):
        Failover([A], "random")
    single = Failover([A])
    assert single.failed() is True and single.current == A


def test_settings_take_a_list_a_joined_string_and_the_strategy() -> None:
    from_toml = load(overrides={"broker_url": [A, B], "broker_failover_strategy": "shuffle"})
    assert from_toml.broker_url == [A, B] and from_toml.broker_failover_strategy == "shuffle"
    from_env = load(environ={"ASYNCWORKER_BROKER_URL": f"{A};{B}"})
    assert from_env.broker_url == f"{A};{B}"
    with pytest.raises(ImproperlyConfigured):
        load(overrides={"broker_url": 5})


def test_the_broker_is_made_with_every_url() -> None:
    broker = brokers.create(Settings(broker_url=f"{A};pyamqp://u:pb@b//"))
    assert isinstance(broker, AmqpBroker)
    assert broker.failover.urls == [A, "pyamqp://u:pb@b//"]
    assert "pa" not in broker.display_url and "pb" not in broker.display_url
    assert broker.url == "amqp://u:pa@a:5672/?heartbeat=60"
    broker.failover.failed()
    assert broker.url == "amqp://u:pb@b/?heartbeat=60" and broker.node_url().endswith("b//")
    with pytest.raises(ImproperlyConfigured, match="same transport"):
        brokers.create(Settings(broker_url=f"{A};memory://x"))


def test_stats_broker_names_the_node_in_use_and_every_alternate() -> None:
    settings = Settings(broker_url=[A, B], broker_failover_strategy="shuffle")
    info = describe.broker_info(settings.broker_url, settings, current=B)
    assert info["hostname"] == "b" and info["failover_strategy"] == "shuffle"
    assert info["alternates"] == ["amqp://u:***@a:5672//", "amqp://u:***@b:5672//"]
    assert "pa" not in json.dumps(info) and "pb" not in json.dumps(info)
    assert describe.conf(settings)["broker_url"] == info["alternates"]


def test_an_attempt_that_moves_to_another_node_does_not_back_off() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append((event, kw))

        error = warning

    outage = Outage("broker", "a", BackoffPolicy(initial=1.0), Log(), rng=lambda: 1.0)
    assert outage.failed(OSError("refused"), pause=False) == 0.0
    assert outage.failed(OSError("refused"), pause=False) == 0.0
    assert outage.failed(OSError("refused")) == 1.0  # the first pause, not the third
    assert outage.failed(OSError("refused")) == 2.0
    assert [kw["attempt"] for _, kw in lines] == [1, 2, 3, 4]


def test_ping_tries_every_node_and_redacts_them() -> None:
    import asyncio

    from asyncworker.monitoring.ping import mailbox_ping
    from tests.private_services import free_port

    dead = [f"amqp://u:secret@127.0.0.1:{free_port()}//" for _ in range(2)]
    ok, text = asyncio.run(mailbox_ping(";".join(dead), "w@h", timeout=2))
    assert not ok and text.count("amqp://u:***@127.0.0.1:") == 2 and "secret" not in text


def test_dead_letters_and_delay_buckets_take_their_queues_type() -> None:
    from asyncworker.broker import delay
    from asyncworker.broker.topology import Topology
    from asyncworker.deadletter import dlq_spec

    topology = Topology(Settings(task_default_queue_type="quorum",
                                 task_queues={"old": {"queue_type": "classic"}, "new": {}}))
    assert topology.queue_type("old") == "classic"
    assert topology.queue_type("elsewhere") == "quorum"  # declared on demand: the default
    assert Topology(Settings()).queue_type("celery") == "classic"
    assert dlq_spec("q", ".dlq", "quorum").arguments == {"x-queue-type": "quorum"}
    assert dlq_spec("q", ".dlq").arguments == {}
    assert delay.bucket_spec("q", 3, "quorum").arguments["x-queue-type"] == "quorum"
    assert "x-queue-type" not in delay.bucket_spec("q", 3).arguments
