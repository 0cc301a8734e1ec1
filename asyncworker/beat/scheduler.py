"""The scheduler: compute due ticks, claim them, publish what was won.

One loop, read top to bottom in :meth:`Beat.step`:

1. every ``beat_sync_every`` seconds, reload the entries table (entries added,
   changed, paused or removed at run time);
2. every ``beat_claim_timeout / 2`` seconds, take over ticks another replica
   claimed and never published, and publish them with the same task id;
3. fire what is due: each entry's ticks up to now, a late tick still within
   ``beat_misfire_grace_time``, older ones coalesced into one run; claim them
   in batches of ``BATCH`` (one round trip each), publish the ticks this
   replica won (concurrently, each with a publisher confirm), mark them sent,
   log one line per fire;
4. sleep until the next tick or chore is due.

Any number of replicas may run this loop with the same settings: a tick is
published by the replica whose claim wins (see :mod:`.store`), so there is no
leader and no fail-over gap. The schedules come from APScheduler's triggers
(through :mod:`asyncworker.schedules`); APScheduler's own scheduler and job
stores are not used, since they cannot be shared between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from .. import schedules
from ..exceptions import ImproperlyConfigured
from ..logging import get_logger
from .entries import BEAT_HEADER, Entry, Tick, load, routing
from .settings import BeatSettings
from .store import MemoryStore, TickStore
from .store import create as create_store

if TYPE_CHECKING:
    from ..app import App, PreparedTask

#: Most missed ticks of one entry counted when catching up.
MAX_CATCH_UP = 10_000
#: Ticks claimed per round trip, and published at once.
BATCH = 500
#: Batches being published at once by one replica.
IN_FLIGHT = 4
PRUNE_EVERY = timedelta(hours=1)
_TINY = timedelta(microseconds=1)
# Options that count from the moment of publishing.
_PER_PUBLISH = frozenset({"countdown", "expires", "eta"})
KEEP_SENT = timedelta(days=1)


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def default_node() -> str:
    """``host:pid``: names this replica in claims and logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Missed:
    """Ticks coalesced into one run: how many, and the time they all lie before."""

    count: int
    upto: datetime


@dataclass(slots=True)
class Plan:
    """Where one entry stands: its anchor, its latest tick, its next tick."""

    entry: Entry
    anchor: datetime
    since: datetime
    next: datetime | None
    #: The entry's message, once built (see ``Beat._prepared``).
    prepared: PreparedTask | None = None


class Beat:
    """A scheduler replica: ``await Beat(app).run()`` until :meth:`stop`."""

    def __init__(self, app: App, *, store: TickStore | None = None,
                 node: str | None = None) -> None:
        self.app = app
        self.node = node or default_node()
        #: The timezone crontabs are evaluated in, and the settings' entries (checked:
        #: a bad entry raises ``ImproperlyConfigured`` here).
        self.tz = self.settings.tz()
        self.static = load(self.settings.beat_schedule, app)
        self.store = store
        self.plans: dict[str, Plan] = {}
        #: Set once the entries are loaded and the loop runs.
        self.ready = asyncio.Event()
        self.log = get_logger("beat")
        self._stopping = asyncio.Event()
        self._entries_version: Any = object()
        self._due_sync = self._due_take_over = self._due_prune = utcnow()
        self._failures = 0
        #: Coalesced runs found by ``due_ticks``, logged by ``fire`` if this replica wins them.
        self._missed: dict[Tick, Missed] = {}

    @property
    def settings(self) -> BeatSettings:
        return self.app.settings.section(BeatSettings)

    def stop(self) -> None:
        """Ask the loop to finish (ticks being published are completed first)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (monitoring: no longer ready)."""
        return self._stopping.is_set()

    # -- the loop -------------------------------------------------------------
    async def run(self) -> None:
        """Load the entries, then fire ticks until stopped.

        The store is reached (and the entries read) with the same retries as
        every step, so a scheduler started during a database outage waits
        for it instead of exiting.
        """
        own_store = self.store is None
        store = self.store = self.store or create_store(self.app.settings)
        try:
            while not self._stopping.is_set():
                delay = await self._guarded(self._start)
                if delay is None:
                    break
                await self._sleep(delay)
            else:
                return
            self.log.info("beat started", node=self.node, store=store.describe(),
                          timezone=str(self.tz), entries=len(self.plans))
            if isinstance(store, MemoryStore):
                self.log.warning("beat: ticks are claimed in this process only; run one "
                                 "scheduler, or set beat_store / a database result_backend")
            self.ready.set()
            while not self._stopping.is_set():
                await self._sleep(await self._guarded(self.step) or 0.0)
        finally:
            self.log.info("beat stopped", node=self.node)
            if own_store:
                await store.close()

    async def _start(self) -> float | None:
        assert self.store is not None
        await self.store.setup()
        await self.sync_entries()
        # Connect and declare every route now, not in the first burst of publishes.
        targets = {(p.entry.task, *routing(p.entry.task, p.entry.options, self.app))
                   for p in self.plans.values()}
        for task, queue, exchange, routing_key in targets:
            await self.app.declare_route(task, queue=queue, exchange=exchange,
                                         routing_key=routing_key)
        # Build and encode each entry's message now: the first burst only splices ids.
        for plan in self.plans.values():
            await self._prepared(plan).encode()
        # The entries live as long as the process: keep them out of the collector's
        # full passes (measured: 0.4-1.2 s of them while 10,000 ticks were published).
        gc.collect()
        gc.freeze()
        return None

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _guarded(self, action: Callable[[], Awaitable[float | None]]) -> float | None:
        """Run ``action``; an outage (database, broker) is logged, and the back-off
        before trying again returned instead of its result."""
        try:
            result = await action()
        except (asyncio.CancelledError, ImproperlyConfigured):
            raise
        except Exception as exc:
            self._failures += 1
            delay = min(10.0, 0.5 * float(2 ** min(self._failures, 5)))
            self.log.error("beat step failed; retrying", error=repr(exc), retry_in=delay)
            return delay
        if self._failures:
            self.log.info("beat recovered", after_failures=self._failures)
            self._failures = 0
        return result

    async def step(self) -> float:
        """Do what is due now; returns the seconds until something else is."""
        settings = self.settings
        now = utcnow()
        if now >= self._due_sync:
            await self.sync_entries()
            self._due_sync = now + timedelta(seconds=settings.beat_sync_every)
        if now >= self._due_take_over:
            await self.take_over()
            self._due_take_over = now + timedelta(seconds=settings.beat_claim_timeout / 2)
        due = self.due_ticks(utcnow())
        if due:
            await self.fire(due)
        if now >= self._due_prune:
            assert self.store is not None
            await self.store.prune(now - KEEP_SENT)
            self._due_prune = now + PRUNE_EVERY
        upcoming = [p.next for p in self.plans.values() if p.next is not None]
        wake = min([*upcoming, self._due_sync, self._due_take_over])
        return max(0.0, (wake - utcnow()).total_seconds())

    # -- 1. entries -----------------------------------------------------------
    async def sync_entries(self) -> None:
        """Apply the settings' entries and the table's, if the table changed."""
        assert self.store is not None
        version = await self.store.entries_version()
        if version == self._entries_version:
            return
        wanted = dict(self.static)
        for row in await self.store.load_entries():
            if row.name in self.static:
                self.log.warning("beat entry in the table ignored: the settings define it",
                                 entry=row.name)
                continue
            if not row.enabled:
                continue
            try:
                wanted[row.name] = Entry.from_config(row.name, row.config, self.app, "database")
            except ImproperlyConfigured as exc:
                # The table is edited at run time: a bad row must not stop the others.
                self.log.error("beat entry skipped", entry=row.name, error=str(exc))
        await self._replan(wanted)
        self._entries_version = version

    async def _replan(self, wanted: dict[str, Entry]) -> None:
        for name in self.plans.keys() - wanted.keys():
            del self.plans[name]
            if self.ready.is_set():
                self.log.info("beat entry removed", entry=name)
        for name, entry in wanted.items():
            plan = self.plans.get(name)
            if plan is not None and not plan.entry.same_job(entry):
                plan.entry, plan.prepared = entry, None
                plan.next = self._next(entry.schedule, plan.since, plan.anchor, {})
                self.log.info("beat entry changed", entry=name, next=_iso(plan.next))
        new = [name for name in wanted if name not in self.plans]
        if not new:
            return
        assert self.store is not None
        histories = await self.store.history(new, utcnow())
        cache: dict[Any, datetime | None] = {}
        for name in new:
            entry, history = wanted[name], histories[name]
            self.plans[name] = Plan(entry, history.anchor, history.since,
                                    self._next(entry.schedule, history.since, history.anchor,
                                               cache))
            if self.ready.is_set():
                self.log.info("beat entry added", entry=name, next=_iso(self.plans[name].next))

    # -- 2. take-overs ----------------------------------------------------------
    async def take_over(self) -> None:
        """Publish ticks whose claimer died (or failed to publish) before sending them."""
        assert self.store is not None
        taken = await self.store.take_over(self.node, self.settings.beat_claim_timeout)
        if not taken:
            return
        for tick, previous in taken:
            if previous == self.node:  # its own publish failed earlier (broker outage)
                self.log.info("beat retrying a tick", entry=tick.entry, task_id=tick.task_id,
                              scheduled=_iso(tick.fire_time))
                continue
            self.log.warning("beat took over a tick", entry=tick.entry, task_id=tick.task_id,
                             scheduled=_iso(tick.fire_time), previous=previous, node=self.node)
            self.app.hooks.beat_took_over(tick, previous)
        await self._publish_claimed([tick for tick, _ in taken])

    # -- 3. fire ----------------------------------------------------------------
    def due_ticks(self, now: datetime) -> list[Tick]:
        """The ticks to fire now; advances every plan past ``now``.

        Ticks late by at most the grace time fire one by one. Older ones are
        coalesced: into the first timely tick if there is one, else into one
        run named by the first missed tick (the same on every replica).
        """
        cutoff = now - timedelta(seconds=self.settings.beat_misfire_grace_time)
        cache: dict[Any, datetime | None] = {}
        ticks: list[Tick] = []
        for name, plan in self.plans.items():
            first = plan.next
            if first is None or first > now:
                continue
            schedule, anchor = plan.entry.schedule, plan.anchor
            # The timely ticks: from the first at or after the cutoff, up to now.
            at = first if first >= cutoff else self._next(schedule, cutoff - _TINY, anchor,
                                                           cache)
            timely: list[datetime] = []
            while at is not None and at <= now:
                timely.append(at)
                at = self._next(schedule, at, anchor, cache)
            plan.next = at
            plan.since = timely[-1] if timely else cutoff - _TINY
            if first < cutoff:
                run = Tick(name, timely[0] if timely else first)
                self._missed[run] = Missed(self._count(schedule, first, cutoff, anchor, cache),
                                           cutoff - _TINY)
                timely = timely or [first]
            ticks.extend(Tick(name, t) for t in timely)
        return ticks

    def _count(self, schedule: schedules.BaseSchedule, first: datetime, cutoff: datetime,
               anchor: datetime, cache: dict[Any, datetime | None]) -> int:
        """How many ticks from ``first`` fall before ``cutoff`` (at most MAX_CATCH_UP)."""
        count = 0
        at: datetime | None = first
        while at is not None and at < cutoff and count < MAX_CATCH_UP:
            count += 1
            at = self._next(schedule, at, anchor, cache)
        return count

    async def fire(self, ticks: Sequence[Tick]) -> None:
        """Claim ``ticks`` batch by batch and publish each batch won, up to
        ``IN_FLIGHT`` batches at once.

        Replicas walk the batches from different starting points (by node name),
        so with many ticks due at once they claim, and publish, different parts in
        parallel. Within a batch ticks are claimed in one global order, so
        overlapping claims of two replicas never deadlock.
        """
        assert self.store is not None
        # A burst allocates a lot and frees nearly all of it by reference counting:
        # the collector's passes meanwhile are pure cost (measured: 17% of the CPU
        # of 10,000 ticks). Cycles left are collected once it is back on.
        pause_gc = len(ticks) > BATCH and gc.isenabled()
        if pause_gc:
            gc.disable()
        try:
            await self._fire(ticks)
        finally:
            if pause_gc:
                gc.enable()

    async def _fire(self, ticks: Sequence[Tick]) -> None:
        assert self.store is not None
        store, missed, self._missed = self.store, self._missed, {}
        ordered = sorted(ticks, key=_tick_order)
        batches = [ordered[i:i + BATCH] for i in range(0, len(ordered), BATCH)]
        start = zlib.crc32(self.node.encode()) % len(batches) if batches else 0
        batches = batches[start:] + batches[:start]
        # Batches in flight: a batch waits mostly for the broker's confirms (persistent
        # messages are confirmed once on disk), so the next ones go out meanwhile.
        slots = asyncio.Semaphore(IN_FLIGHT)
        publishing: list[asyncio.Task[None]] = []

        async def publish(won: list[Tick]) -> None:
            try:
                await self._publish_won(won, missed)
            finally:
                slots.release()

        claiming = asyncio.ensure_future(store.claim(batches[0], self.node)) if batches else None
        try:
            for index in range(len(batches)):
                assert claiming is not None
                won = await claiming
                claiming = None
                await slots.acquire()
                publishing.append(asyncio.create_task(publish(won)))
                if index + 1 < len(batches):
                    claiming = asyncio.ensure_future(store.claim(batches[index + 1], self.node))
        finally:
            if claiming is not None:  # a step failed: what the claim wins is taken over later
                claiming.cancel()
            results = await asyncio.gather(*publishing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _publish_won(self, won: list[Tick], missed: dict[Tick, Missed]) -> None:
        """Record the coalesced runs among ``won``, then publish them all."""
        for tick in won:
            if tick in missed:
                count = missed[tick].count
                self.log.warning("beat missed ticks, coalesced into one run",
                                 entry=tick.entry, missed=count,
                                 at_least=count >= MAX_CATCH_UP, run=tick.task_id,
                                 scheduled=_iso(tick.fire_time))
                # The missed ticks are done: a restart must not count them again.
                assert self.store is not None
                await self.store.advance(tick.entry, missed[tick].upto)
                self.app.hooks.beat_missed(tick, count)
        await self._publish_claimed(won)

    async def _publish_claimed(self, ticks: Sequence[Tick]) -> None:
        """Publish claimed ticks concurrently; mark sent those the broker confirmed."""
        assert self.store is not None
        for start in range(0, len(ticks), BATCH):
            batch = ticks[start:start + BATCH]
            results = await asyncio.gather(*(self._publish(t) for t in batch))
            sent = [tick for tick, ok in zip(batch, results, strict=True) if ok]
            await self.store.mark_sent(sent)
            done = utcnow()
            for tick in sent:
                lag = (done - tick.fire_time).total_seconds()
                self.log.info("beat fired", entry=tick.entry, task_id=tick.task_id,
                              scheduled=_iso(tick.fire_time), lag=round(lag, 3))
                self.app.hooks.beat_fired(tick, lag)

    async def _publish(self, tick: Tick) -> bool:
        plan = self.plans.get(tick.entry)
        if plan is None:
            # Removed or paused since it was claimed, or known only to another replica's
            # settings: leave it to a replica that knows it, while it is still timely.
            late = (utcnow() - tick.fire_time).total_seconds()
            keep = late <= self.settings.beat_misfire_grace_time
            self.log.warning("beat tick for an entry not loaded here", entry=tick.entry,
                             task_id=tick.task_id, left_for_others=keep)
            return not keep
        try:
            await self._prepared(plan).send(tick.task_id)
        except Exception as exc:
            # Left claimed and unsent: a take-over publishes it once the claim is stale.
            self.log.error("beat publish failed", entry=tick.entry, task_id=tick.task_id,
                           error=repr(exc))
            return False
        return True

    def _prepared(self, plan: Plan) -> PreparedTask:
        """The entry's message, built once (each tick only changes its task id).

        Sent as Celery's beat sends it: ``apply_async`` for a task this app
        has (its own queue applies), ``send_task`` otherwise, with the
        ``celery_beat_task`` header. Options that count from the publish
        (``countdown``, ``expires``, ``eta``) make it afresh every time.
        """
        if plan.prepared is not None:
            return plan.prepared
        entry = plan.entry
        options = dict(entry.options)
        options["headers"] = {**(options.get("headers") or {}), BEAT_HEADER: True}
        options["queue"], options["exchange"], options["routing_key"] = routing(
            entry.task, entry.options, self.app)
        prepared = self.app.prepare(entry.task, list(entry.args), dict(entry.kwargs),
                                    **{k: v for k, v in options.items() if v is not None})
        if not _PER_PUBLISH.intersection(entry.options):
            plan.prepared = prepared
        return prepared

    # -- schedules --------------------------------------------------------------
    def _next(self, schedule: schedules.BaseSchedule, after: datetime, anchor: datetime,
              cache: dict[Any, datetime | None]) -> datetime | None:
        """``schedule.next_after``, computed once per step for entries that share it."""
        key = (schedule.key(), after,
               anchor if isinstance(schedule, schedules.schedule) else None)
        if key not in cache:
            cache[key] = schedule.next_after(after, self.tz, anchor)
        return cache[key]


def upcoming(entry: Entry, tz: tzinfo, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fires of ``entry`` strictly after ``after``, with no history
    (an interval's first fire is ``after`` plus the interval)."""
    times: list[datetime] = []
    at = after
    for _ in range(count):
        nxt = entry.schedule.next_after(at, tz, after)
        if nxt is None:
            break
        times.append(nxt)
        at = nxt
    return times


def _tick_order(tick: Tick) -> tuple[str, datetime]:
    return tick.entry, tick.fire_time


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
