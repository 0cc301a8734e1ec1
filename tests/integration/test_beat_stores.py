"""The tick stores' contract, the same for PostgreSQL, Redis and memory.

Each test runs once per store, with two or more store instances standing for
scheduler replicas (the memory store is process-local, so its "replicas"
share one instance). Entry names are unique per test, since the tables and
keys are shared; what a test claims is marked sent and forgotten at teardown.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from asyncworker.beat.entries import Tick
from asyncworker.beat.postgres import PostgresStore
from asyncworker.beat.redis import RedisStore
from asyncworker.beat.store import MemoryStore, TickStore
from asyncworker.settings import Settings
from tests.conftest import PG_DSN, REDIS_URL

pytestmark = pytest.mark.integration

#: Claim timeout of the take-over tests (seconds).
TIMEOUT = 0.3
#: How long a test waits for a take-over before failing.
DEADLINE = 10.0
#: A zone away from UTC (ticks and anchors are UTC; the database stores convert others).
ZONE = timezone(timedelta(hours=5, minutes=30))


class Stores:
    """Store instances of one kind (replicas), and the entries and ticks a test made."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.replicas: list[TickStore] = []
        self.names: list[str] = []
        self.made: list[Tick] = []
        self._memory = MemoryStore()

    async def replica(self) -> TickStore:
        """A new connected instance (the shared one for the memory store)."""
        if self.kind == "memory":
            return self._memory
        store: TickStore = (PostgresStore(PG_DSN, Settings()) if self.kind == "postgres"
                            else RedisStore(REDIS_URL))
        await store.setup()
        self.replicas.append(store)
        return store

    def entry(self) -> str:
        """A name no other test uses (with a colon, as entry names may have)."""
        name = f"contract:{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name

    def ticks(self, entry: str, count: int, start: datetime | None = None,
              every: timedelta = timedelta(seconds=1, microseconds=1)) -> list[Tick]:
        """``count`` ticks of ``entry`` (with microseconds), from an hour ago."""
        start = start or (now() - timedelta(hours=1)).replace(microsecond=123457)
        made = [Tick(entry, start + i * every) for i in range(count)]
        self.made.extend(made)
        return made

    async def close(self) -> None:
        """Settle and forget what the test made (take-overs must not find it later)."""
        if not self.replicas:
            return  # memory: dropped with the test
        if self.made:
            await self.replicas[0].mark_sent(self.made)
        for name in self.names:
            await self.replicas[0].forget(name)
        for store in self.replicas:
            await store.close()


KINDS = ["postgres", "redis", "memory"]


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    if request.param != "memory":
        request.getfixturevalue("services")
    made = Stores(request.param)
    yield made
    await made.close()


def now() -> datetime:
    return datetime.now(UTC)


def assert_utc(moment: datetime) -> None:
    assert moment.utcoffset() == timedelta(0), moment


async def take_over_until(store: TickStore, node: str, wanted: Callable[[], bool],
                          seen: list[tuple[Tick, str]], timeout: float = TIMEOUT) -> None:
    """Poll ``store.take_over`` until ``wanted()``; everything taken goes to ``seen``."""
    deadline = time.monotonic() + DEADLINE
    while not wanted():
        if time.monotonic() > deadline:
            raise AssertionError(f"no take-over within {DEADLINE}s; got {seen}")
        seen.extend(await store.take_over(node, timeout))
        if not wanted():
            await asyncio.sleep(0.02)


def ours(taken: list[tuple[Tick, str]], ticks: list[Tick]) -> list[tuple[Tick, str]]:
    """The take-overs of ``ticks`` (others may be in the store)."""
    mine = {t.entry for t in ticks}
    return [(tick, node) for tick, node in taken if tick.entry in mine]


async def test_empty_calls(stores: Stores) -> None:
    store = await stores.replica()
    assert await store.claim([], "a") == []
    await store.mark_sent([])
    assert await store.history([], now()) == {}
    await store.forget(stores.entry())  # unknown: nothing to do


async def test_concurrent_replicas_win_each_tick_once(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    names = [stores.entry() for _ in range(5)]
    await a.history(names, now())
    ticks = [t for name in names for t in stores.ticks(name, 500)]
    won_a, won_b = await asyncio.gather(a.claim(ticks, "a"), b.claim(ticks, "b"))
    assert Counter(won_a) + Counter(won_b) == Counter(ticks)
    assert await a.claim(ticks, "a") == [] and await b.claim(ticks, "b") == []
    for tick in won_a + won_b:
        assert_utc(tick.fire_time)


@pytest.mark.parametrize("stores", [
    "postgres", "redis", "memory"], indirect=True)
async def test_replicas_claiming_in_opposite_orders(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    names = [stores.entry() for _ in range(5)]
    await a.history(names, now())
    ticks = [t for name in names for t in stores.ticks(name, 500)]
    won_a, won_b = await asyncio.gather(a.claim(ticks, "a"), b.claim(ticks[::-1], "b"))
    assert Counter(won_a) + Counter(won_b) == Counter(ticks)


async def test_claim_advances_last_fire_never_backwards(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    name = stores.entry()
    anchor = now()
    assert (await a.history([name], anchor))[name].last_fire is None
    t1, t2, t3, t4, t5 = stores.ticks(name, 5)

    async def last_fire() -> datetime | None:
        history = (await b.history([name], now()))[name]
        assert history.anchor == anchor
        return history.last_fire

    assert await a.claim([t3], "a") == [t3]
    assert await last_fire() == t3.fire_time
    assert await b.claim([t1], "b") == [t1]
    assert await last_fire() == t3.fire_time
    assert set(await a.claim([t4, t5, t2], "a")) == {t2, t4, t5}
    fire = await last_fire()
    assert fire == t5.fire_time
    assert fire is not None and fire.microsecond == t5.fire_time.microsecond
    assert_utc(fire)
    assert await b.claim([t5, t1], "b") == []
    assert await last_fire() == t5.fire_time


async def test_advance_moves_last_fire_forward_only(stores: Stores) -> None:
    """What a coalesced run records: the missed ticks up to ``upto`` are done."""
    a, b = await stores.replica(), await stores.replica()
    name, unknown = stores.entry(), stores.entry()
    anchor = now()
    await a.history([name], anchor)
    t1, t2, t3 = stores.ticks(name, 3)
    assert await a.claim([t1], "a") == [t1]
    await a.advance(name, t3.fire_time)
    assert (await b.history([name], now()))[name].last_fire == t3.fire_time
    await b.advance(name, t2.fire_time)  # backwards: ignored
    assert (await a.history([name], now()))[name].last_fire == t3.fire_time
    await a.advance(unknown, t3.fire_time)  # no history: nothing to advance
    assert (await a.history([unknown], now()))[unknown].last_fire is None


async def test_claim_without_history_records_none(stores: Stores) -> None:
    store = await stores.replica()
    name = stores.entry()
    [tick] = stores.ticks(name, 1)
    assert await store.claim([tick], "a") == [tick]
    # Only an anchored entry's last fire moves: the scheduler anchors before claiming.
    assert (await store.history([name], now()))[name].last_fire is None


async def test_first_anchor_wins(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    first, second, third = stores.entry(), stores.entry(), stores.entry()
    early = datetime(2031, 5, 6, 7, 8, 9, 101112, tzinfo=UTC)
    late = early + timedelta(minutes=3, microseconds=7)

    anchored = (await a.history([first], early))[first]
    assert anchored.anchor == early and anchored.last_fire is None
    assert anchored.anchor.microsecond == early.microsecond
    assert_utc(anchored.anchor)
    both = await b.history([first, second], late)
    assert both[first].anchor == early and both[second].anchor == late
    assert (await a.history([second], early))[second].anchor == late

    h_a, h_b = await asyncio.gather(a.history([third], early), b.history([third], late))
    assert h_a[third].anchor == h_b[third].anchor
    assert h_a[third].anchor in (early, late)


async def test_sent_ticks_are_never_taken_over(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    name = stores.entry()
    await a.history([name], now())
    *sent, control = stores.ticks(name, 20)
    assert len(await a.claim([*sent, control], "a")) == 20
    await a.mark_sent(sent)
    seen: list[tuple[Tick, str]] = []
    await take_over_until(b, "b", lambda: any(t == control for t, _ in seen), seen)
    assert ours(seen, sent) == [(control, "a")]


async def test_unsent_claim_is_taken_over_after_the_timeout(stores: Stores) -> None:
    a, b, c = await stores.replica(), await stores.replica(), await stores.replica()
    name = stores.entry()
    [tick] = stores.ticks(name, 1)
    started = time.monotonic()
    assert await a.claim([tick], "a") == [tick]
    early = ours(await b.take_over("b", TIMEOUT), [tick])
    assert early == [] or time.monotonic() - started >= TIMEOUT

    seen: list[tuple[Tick, str]] = []
    await take_over_until(b, "b", lambda: bool(ours(seen, [tick])), seen)
    assert time.monotonic() - started >= TIMEOUT - 0.01
    [(taken, previous)] = ours(seen, [tick])
    assert (taken, previous) == (tick, "a")
    assert taken.fire_time.microsecond == tick.fire_time.microsecond
    assert_utc(taken.fire_time)

    # The take-over is a new claim: its own timeout starts now, its claimer is b.
    retaken = time.monotonic()
    early = ours(await c.take_over("c", TIMEOUT), [tick])
    assert early == [] or time.monotonic() - retaken >= TIMEOUT
    seen.clear()
    await take_over_until(c, "c", lambda: bool(ours(seen, [tick])), seen)
    assert ours(seen, [tick]) == [(tick, "b")]

    # Sent, it is settled for good.
    await c.mark_sent([tick])
    other = stores.ticks(stores.entry(), 1)
    assert len(await a.claim(other, "a")) == 1
    seen.clear()
    await take_over_until(b, "b", lambda: bool(ours(seen, other)), seen)
    assert ours(seen, [tick]) == []


async def test_concurrent_take_overs_never_share_a_tick(stores: Stores) -> None:
    a = await stores.replica()
    thieves = [await stores.replica() for _ in range(3)]
    ticks = [t for _ in range(4) for t in stores.ticks(stores.entry(), 250)]
    assert len(await a.claim(ticks, "a")) == len(ticks)
    taken: list[tuple[Tick, str]] = []
    deadline = time.monotonic() + DEADLINE
    while len(taken) < len(ticks):
        assert time.monotonic() < deadline, f"{len(taken)} of {len(ticks)} taken"
        rounds = await asyncio.gather(*(store.take_over(f"thief{i}", TIMEOUT)
                                        for i, store in enumerate(thieves)))
        for got in rounds:
            taken.extend(ours(got, ticks))
        await asyncio.sleep(0.02)
    # Each tick taken once, from its claimer (never from another thief).
    assert Counter(tick for tick, _ in taken) == Counter(ticks)
    assert {previous for _, previous in taken} == {"a"}


async def test_forget_resets_the_anchor(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    name = stores.entry()
    first = now() - timedelta(days=1)
    assert (await a.history([name], first))[name].anchor == first
    [tick] = stores.ticks(name, 1)
    assert await a.claim([tick], "a") == [tick]
    assert (await b.history([name], now()))[name].last_fire == tick.fire_time

    await b.forget(name)
    again = now()
    history = (await a.history([name], again))[name]
    assert history.anchor == again and history.last_fire is None
    # Claims outlive the history: the tick is still taken.
    assert await b.claim([tick], "b") == []


async def test_prune_keeps_unsent_claims(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    name = stores.entry()
    unsent, sent = stores.ticks(name, 2, start=now() - timedelta(days=3))
    assert len(await a.claim([unsent, sent], "a")) == 2
    await a.mark_sent([sent])
    await a.prune(now() + timedelta(hours=1))
    seen: list[tuple[Tick, str]] = []
    await take_over_until(b, "b", lambda: bool(ours(seen, [unsent])), seen)
    assert ours(seen, [unsent, sent]) == [(unsent, "a")]


async def test_a_batch_of_5000_ticks(stores: Stores) -> None:
    a, b = await stores.replica(), await stores.replica()
    names = [stores.entry() for _ in range(10)]
    await a.history(names, now())
    ticks = [t for name in names for t in stores.ticks(name, 500)]
    started = time.monotonic()
    won = await a.claim(ticks, "a")
    elapsed = time.monotonic() - started
    assert Counter(won) == Counter(ticks)
    assert elapsed < 5, f"5,000 claims took {elapsed:.2f}s"
    assert await b.claim(ticks, "b") == []
    histories = await b.history(names, now())
    for name in names:
        assert histories[name].last_fire == max(t.fire_time for t in ticks if t.entry == name)
    await timed(a.mark_sent(won), 5)


async def timed(call: Awaitable[Any], limit: float) -> Any:
    started = time.monotonic()
    result = await call
    assert time.monotonic() - started < limit
    return result


@pytest.mark.parametrize("stores", ["postgres", "redis"], indirect=True)
async def test_times_in_other_zones_come_back_utc(stores: Stores) -> None:
    # The memory store keeps the times it is given: the scheduler gives UTC.
    a, b = await stores.replica(), await stores.replica()
    name = stores.entry()
    anchor = datetime(2031, 5, 6, 7, 8, 9, 101112, tzinfo=ZONE)
    history = (await a.history([name], anchor))[name]
    assert history.anchor == anchor
    assert_utc(history.anchor)
    ticks = stores.ticks(name, 3, start=datetime.now(ZONE) - timedelta(hours=1))
    won = await a.claim(ticks, "a")
    assert Counter(won) == Counter(ticks)
    for tick in won:
        assert_utc(tick.fire_time)
    # The same instants written in UTC are the same ticks.
    assert await b.claim([Tick(t.entry, t.fire_time.astimezone(UTC)) for t in ticks], "b") == []
    fire = (await b.history([name], now()))[name].last_fire
    assert fire == ticks[-1].fire_time and fire is not None
    assert_utc(fire)
    seen: list[tuple[Tick, str]] = []
    await take_over_until(b, "b", lambda: len(ours(seen, ticks)) == 3, seen)
    for tick, _ in seen:
        assert_utc(tick.fire_time)
    assert Counter(t for t, _ in ours(seen, ticks)) == Counter(ticks)


@pytest.mark.parametrize("stores", [
    "postgres", "redis",
    "memory"], indirect=True)
async def test_mark_sent_ignores_unclaimed_ticks(stores: Stores) -> None:
    store = await stores.replica()
    name = stores.entry()
    claimed, unclaimed = stores.ticks(name, 2)
    assert await store.claim([claimed], "a") == [claimed]
    await store.mark_sent([unclaimed, claimed])
    # The unclaimed tick is still free; the claimed one is settled.
    assert await store.claim([unclaimed], "b") == [unclaimed]
    await store.mark_sent([unclaimed])
