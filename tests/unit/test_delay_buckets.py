"""Delay-queue arithmetic: which bucket a far ETA goes to, and the hops it makes."""

from __future__ import annotations

import math

import pytest

from asyncworker.broker import delay


@pytest.mark.parametrize(("seconds", "limit", "expected"), [
    (3600, 600, [2048, 1024]),             # an hour out: back 528 s before, held
    (12, 2, [8, 2]),                       # the integration test's numbers
    (6, 2, [4]),                           # lands 2 s before: held from there
    (601, 600, [256]),                     # just past the limit: back 345 s before
    (600, 600, []),                        # at the limit: held, not parked
    (86400, 600, [65536, 16384, 4096]),    # a day: three hops
])
def test_hops(seconds: float, limit: float, expected: list[int]) -> None:
    assert delay.hops(seconds, limit) == expected


@pytest.mark.parametrize("seconds", [601.0, 700.5, 3600.0, 86400.0, 10 ** 7, 3.2e7, 3.2e8])
def test_every_hop_lands_within_the_limit_and_never_after_the_eta(seconds: float) -> None:
    """What is left after the last hop is between half the limit and the limit, and the
    number of hops grows with the logarithm of the delay (each at least halves what
    is left above half the limit)."""
    limit = 600.0
    path = delay.hops(seconds, limit)
    left = seconds - sum(path)
    assert limit / 2 <= left <= limit
    assert all(b <= 2 ** delay.MAX_LEVEL for b in path)
    longest = 2 ** delay.MAX_LEVEL
    assert len(path) <= seconds // longest + math.log2(min(seconds, longest) / limit) + 2


def test_buckets_are_capped_below_the_ttl_limit() -> None:
    """``x-message-ttl`` is 32-bit milliseconds: the largest bucket fits, a year is
    several hops of it."""
    year = 365 * 86400
    path = delay.hops(year, 600)
    assert path[:7] == [2 ** delay.MAX_LEVEL] * 7
    assert 2 ** delay.MAX_LEVEL * 1000 < 2 ** 32
    spec = delay.bucket_spec("q", delay.MAX_LEVEL)
    assert spec.arguments["x-message-ttl"] == 2 ** delay.MAX_LEVEL * 1000


@pytest.mark.parametrize(("seconds", "limit", "park"), [
    (601, 600, True), (600, 600, False), (10, None, False), (-5, 600, False),
    (1.4, 0.5, True), (1.2, 0.5, False),  # less than a 1 s bucket of room: held
])
def test_should_park(seconds: float, limit: float | None, park: bool) -> None:
    assert delay.should_park(seconds, limit) is park


def test_bucket_declaration_dead_letters_back_to_the_queue() -> None:
    spec = delay.bucket_spec("orders", 3)
    assert spec.name == "asyncworker.delay.8s.orders"
    assert spec.exchange.name == "" and spec.routing_key == spec.name and spec.durable
    assert spec.arguments == {"x-message-ttl": 8000, "x-dead-letter-exchange": "",
                              "x-dead-letter-routing-key": "orders"}


def test_long_queue_names_stay_valid_and_distinct() -> None:
    a, b = "q" * 250 + "a", "q" * 250 + "b"
    names = {delay.bucket_name(a, 8), delay.bucket_name(b, 8)}
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)


def test_parked_headers_drop_dead_lettering_traces_only() -> None:
    headers = {"id": "x", "eta": "2030-01-01T00:00:00+00:00", "x-death": [{}],
               "x-first-death-queue": "q", "x-custom": 1}
    assert delay.parked_headers(headers) == {
        "id": "x", "eta": "2030-01-01T00:00:00+00:00", "x-custom": 1}
