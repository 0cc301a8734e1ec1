"""Faults under a steady task stream, against a private RabbitMQ and PostgreSQL:
what asyncworker loses and runs twice in each ack mode (``bench/chaos.py`` runs the
same scenarios for the README's table, Celery included).

By default: every fault with ``acks_late``, and a worker ``kill -9`` with early
ack. ``ASYNCWORKER_CHAOS_FULL=1`` adds every fault with early ack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.chaos import FAULTS, Chaos, Outcome, private_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

FULL = os.environ.get("ASYNCWORKER_CHAOS_FULL") == "1"
CONCURRENCY = 4


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    with private_chaos() as chaos:
        yield chaos


def _run(chaos: Chaos, acks: str, fault: str) -> Outcome:
    outcome = chaos.run("asyncworker", acks, fault, tasks=300, concurrency=CONCURRENCY)
    # The fault met running tasks, or it proved nothing.
    assert outcome.running, outcome.summary()
    return outcome




@pytest.mark.parametrize("fault", FAULTS)
def test_acks_late_loses_nothing_and_reruns_only_tasks_in_flight(chaos: Chaos,
                                                                 fault: str) -> None:
    outcome = _run(chaos, "late", fault)
    assert outcome.lost == [], outcome.summary()
    assert set(outcome.rerun) <= set(outcome.in_flight), outcome.summary()
    assert set(outcome.duplicated) <= set(outcome.in_flight), outcome.summary()


def test_early_ack_worker_kill_loses_at_most_the_running_tasks(chaos: Chaos) -> None:
    outcome = _run(chaos, "early", "worker-kill-9")
    # Early ack's meaning: a task acked and running when its process dies is gone.
    assert set(outcome.lost) <= set(outcome.running), outcome.summary()
    assert len(outcome.lost) <= CONCURRENCY
    # Prefetched but not started (so not acked): redelivered, run once.
    assert set(outcome.rerun) <= set(outcome.running), outcome.summary()
    assert outcome.duplicated == [], outcome.summary()


@pytest.mark.skipif(not FULL, reason="set ASYNCWORKER_CHAOS_FULL=1 for every fault with early ack")
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "worker-kill-9"])
def test_early_ack_loses_and_reruns_only_tasks_in_flight(chaos: Chaos, fault: str) -> None:
    outcome = _run(chaos, "early", fault)
    assert set(outcome.lost) <= set(outcome.in_flight), outcome.summary()
    assert set(outcome.rerun) <= set(outcome.in_flight), outcome.summary()
