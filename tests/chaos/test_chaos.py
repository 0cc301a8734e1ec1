"""Faults under a steady task stream, against a private broker and PostgreSQL:
what asyncworker loses and runs twice in each ack mode (``bench/chaos.py`` runs the
same scenarios for the README's tables, Celery included).

Each broker runs the faults that apply to it (``bench.chaos.faults_for``):
RabbitMQ's, or Redis's (a private Redis as the broker, with a visibility timeout
short enough for a killed worker's messages to come back within the test, and
malformed envelopes pushed onto the queue's list). By default: every fault with
``acks_late``, and a worker ``kill -9`` with early ack. ``ASYNCWORKER_CHAOS_FULL=1``
adds every fault with early ack.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator

import pytest

from bench.chaos import BROKERS, MALFORMED, Chaos, Outcome, faults_for, private_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

FULL = os.environ.get("ASYNCWORKER_CHAOS_FULL") == "1"
CONCURRENCY = 4
HAS_REDIS = importlib.util.find_spec("asyncworker.broker.redis") is not None


def _pairs(select: Callable[[str, str], bool]) -> list[object]:
    """``(broker, fault)`` parameters for every broker's faults that ``select`` keeps."""
    return [pytest.param(broker, fault, id=f"{broker}-{fault}",
                         marks=[pytest.mark.skipif(
                             broker == "redis" and not HAS_REDIS,
                             reason="asyncworker has no Redis transport in this tree")])
            for broker in BROKERS for fault in faults_for(broker) if select(broker, fault)]


@pytest.fixture(scope="module")
def chaos_on() -> Iterator[Callable[[str], Chaos]]:
    """A private set of services per broker, started on first use."""
    with contextlib.ExitStack() as stack:
        started: dict[str, Chaos] = {}

        def get(broker: str) -> Chaos:
            if broker not in started:
                started[broker] = stack.enter_context(private_chaos(broker))
            return started[broker]

        yield get


def _run(chaos: Chaos, acks: str, fault: str) -> Outcome:
    outcome = chaos.run("asyncworker", acks, fault, tasks=300, concurrency=CONCURRENCY)
    # The fault met running tasks, or it proved nothing.
    assert outcome.running, outcome.summary()
    return outcome


def _check_malformed(outcome: Outcome) -> None:
    # Each bad envelope kept with its reason, and the tasks behind it ran.
    assert outcome.dead_lettered == len(MALFORMED), outcome.summary()
    assert all(outcome.dead_letter_reasons), outcome.dead_letter_reasons
    assert outcome.left_in_queue == 0, outcome.summary()


@pytest.mark.parametrize(("broker", "fault"), _pairs(lambda b, f: True))
def test_acks_late_loses_nothing_and_reruns_only_tasks_in_flight(
        chaos_on: Callable[[str], Chaos], broker: str, fault: str) -> None:
    outcome = _run(chaos_on(broker), "late", fault)
    assert outcome.lost == [], outcome.summary()
    assert set(outcome.rerun) <= set(outcome.in_flight), outcome.summary()
    assert set(outcome.duplicated) <= set(outcome.in_flight), outcome.summary()
    if fault == "malformed-envelopes":
        _check_malformed(outcome)


@pytest.mark.parametrize(("broker", "fault"), _pairs(lambda b, f: f == "worker-kill-9"))
def test_early_ack_worker_kill_loses_at_most_the_running_tasks(
        chaos_on: Callable[[str], Chaos], broker: str, fault: str) -> None:
    outcome = _run(chaos_on(broker), "early", fault)
    # Early ack's meaning: a task acked and running when its process dies is gone.
    assert set(outcome.lost) <= set(outcome.running), outcome.summary()
    assert len(outcome.lost) <= CONCURRENCY
    # Prefetched but not started (so not acked): redelivered (on Redis: restored from
    # the unacked hash after the visibility timeout), run once.
    assert set(outcome.rerun) <= set(outcome.running), outcome.summary()
    assert outcome.duplicated == [], outcome.summary()


@pytest.mark.skipif(not FULL, reason="set ASYNCWORKER_CHAOS_FULL=1 for every fault with early ack")
@pytest.mark.parametrize(("broker", "fault"), _pairs(lambda b, f: f != "worker-kill-9"))
def test_early_ack_loses_and_reruns_only_tasks_in_flight(
        chaos_on: Callable[[str], Chaos], broker: str, fault: str) -> None:
    outcome = _run(chaos_on(broker), "early", fault)
    assert set(outcome.lost) <= set(outcome.in_flight), outcome.summary()
    assert set(outcome.rerun) <= set(outcome.in_flight), outcome.summary()
    if fault == "malformed-envelopes":
        _check_malformed(outcome)
