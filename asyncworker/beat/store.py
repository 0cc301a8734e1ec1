"""Where replicas coordinate: tick claims, entry history and the entries table.

Every replica computes the same due ticks; a tick is published by the one
replica whose claim on it succeeds. A claim is durable before the publish,
and marked sent after the broker confirms it. A claim left unsent for
``beat_claim_timeout`` seconds (its claimer died, or its publish failed) is
taken over by whichever replica looks first, and published again with the
same task id.

Each entry's history is its *anchor* (when it was first scheduled; intervals
count from it) and its *last fire* (the latest claimed tick), so a restart
knows which ticks already fired.

Implementations: :mod:`.postgres` (``INSERT ... ON CONFLICT DO NOTHING``; also
holds the run-time entries table), :mod:`.redis` (``SET NX`` with an expiry),
and :class:`MemoryStore` (one process: tests and ``worker --beat`` without a
backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..backends import normalize_url
from ..exceptions import ImproperlyConfigured
from ..settings import Settings
from .entries import Tick
from .settings import BeatSettings


@dataclass(slots=True)
class History:
    """What the store knows of an entry: when it was first scheduled, its latest tick."""

    anchor: datetime
    last_fire: datetime | None = None

    @property
    def since(self) -> datetime:
        """Ticks after this one are still to fire."""
        return self.last_fire if self.last_fire and self.last_fire > self.anchor else self.anchor


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A row of the entries table, as written by ``beat entries``."""

    name: str
    config: Mapping[str, Any]
    enabled: bool


class TickStore:
    """Base class of the coordination stores."""

    #: Whether run-time entries (``beat entries``) can be kept here.
    supports_entries = False

    def describe(self) -> str:
        """For logs (no credentials)."""
        return type(self).__name__

    async def setup(self) -> None:
        """Connect (and create tables)."""

    async def close(self) -> None:
        """Disconnect."""

    async def history(self, names: Sequence[str], now: datetime) -> dict[str, History]:
        """Each entry's history; an entry seen for the first time is anchored at ``now``."""
        raise NotImplementedError

    async def claim(self, ticks: Sequence[Tick], node: str) -> list[Tick]:
        """Claim ``ticks`` for ``node``; returns those this call won (durably)."""
        raise NotImplementedError

    async def mark_sent(self, ticks: Sequence[Tick]) -> None:
        """Record that ``ticks`` were published (their claims are settled)."""
        raise NotImplementedError

    async def take_over(self, node: str, timeout: float) -> list[tuple[Tick, str]]:
        """Claim for ``node`` the ticks claimed over ``timeout`` seconds ago and still
        unsent; returns each with the node that held it."""
        raise NotImplementedError

    async def advance(self, name: str, upto: datetime) -> None:
        """Move ``name``'s last fire forward to ``upto`` (never back), if it has a
        history: the ticks up to there are done (coalesced into one run)."""
        raise NotImplementedError

    async def forget(self, name: str) -> None:
        """Drop ``name``'s history (a resumed entry starts afresh, like a new one)."""
        raise NotImplementedError

    async def prune(self, before: datetime) -> None:
        """Delete settled claims on ticks scheduled before ``before``."""

    # -- the entries table (run-time entries) -------------------------------
    async def entries_version(self) -> Any:
        """A value that changes whenever the entries table does."""
        return None

    async def load_entries(self) -> list[StoredEntry]:
        """Every row of the entries table."""
        return []

    async def save_entry(self, name: str, config: Mapping[str, Any], *, replace: bool) -> bool:
        """Add (or with ``replace``, overwrite) an entry; False if it exists and not ``replace``."""
        raise ImproperlyConfigured(self.no_entries_reason())

    async def remove_entry(self, name: str) -> bool:
        """Delete an entry; False if there was none."""
        raise ImproperlyConfigured(self.no_entries_reason())

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        """Pause or resume an entry; False if there was none."""
        raise ImproperlyConfigured(self.no_entries_reason())

    def no_entries_reason(self) -> str:
        """Why ``beat entries`` cannot use this store."""
        return (f"run-time entries need PostgreSQL (beat_store or result_backend); "
                f"{self.describe()} cannot hold them")


class MemoryStore(TickStore):
    """Claims in this process only: for tests and a single embedded scheduler."""

    supports_entries = True

    def __init__(self) -> None:
        self.histories: dict[str, History] = {}
        #: (entry, fire time) -> [claimer, claimed at, sent]
        self.claims: dict[tuple[str, datetime], list[Any]] = {}
        self.entries: dict[str, StoredEntry] = {}
        self._version = 0

    def describe(self) -> str:
        return "memory (this process only)"

    async def history(self, names: Sequence[str], now: datetime) -> dict[str, History]:
        return {name: self.histories.setdefault(name, History(now)) for name in names}

    async def claim(self, ticks: Sequence[Tick], node: str) -> list[Tick]:
        won = []
        for tick in ticks:
            key = (tick.entry, tick.fire_time)
            if key not in self.claims:
                self.claims[key] = [node, datetime.now(UTC), False]
                won.append(tick)
                history = self.histories.get(tick.entry)
                if history and (history.last_fire is None or history.last_fire < tick.fire_time):
                    history.last_fire = tick.fire_time
        return won

    async def mark_sent(self, ticks: Sequence[Tick]) -> None:
        for tick in ticks:
            claim = self.claims.get((tick.entry, tick.fire_time))
            if claim is not None:
                claim[2] = True

    async def take_over(self, node: str, timeout: float) -> list[tuple[Tick, str]]:
        now = datetime.now(UTC)
        taken = []
        for (entry, fire_time), claim in self.claims.items():
            if not claim[2] and claim[1] < now - timedelta(seconds=timeout):
                taken.append((Tick(entry, fire_time), claim[0]))
                claim[0], claim[1] = node, now
        return taken

    async def advance(self, name: str, upto: datetime) -> None:
        history = self.histories.get(name)
        if history and (history.last_fire is None or history.last_fire < upto):
            history.last_fire = upto

    async def forget(self, name: str) -> None:
        self.histories.pop(name, None)

    async def prune(self, before: datetime) -> None:
        for key in [k for k, c in self.claims.items() if c[2] and k[1] < before]:
            del self.claims[key]

    async def entries_version(self) -> Any:
        return self._version

    async def load_entries(self) -> list[StoredEntry]:
        return list(self.entries.values())

    async def save_entry(self, name: str, config: Mapping[str, Any], *, replace: bool) -> bool:
        if name in self.entries and not replace:
            return False
        self.entries[name] = StoredEntry(name, dict(config), True)
        self._version += 1
        return True

    async def remove_entry(self, name: str) -> bool:
        if self.entries.pop(name, None) is None:
            return False
        self._version += 1
        return True

    async def set_enabled(self, name: str, enabled: bool) -> bool:
        found = self.entries.get(name)
        if found is None:
            return False
        self.entries[name] = StoredEntry(name, found.config, enabled)
        self._version += 1
        return True


_MEMORY: dict[str, MemoryStore] = {}


def store_url(settings: Settings) -> str | None:
    """The URL ticks are claimed in: ``beat_store``, else the result backend."""
    return settings.section(BeatSettings).beat_store or settings.result_backend


def create(settings: Settings) -> TickStore:
    """The store ``store_url`` names (a process-local one when there is none)."""
    url = store_url(settings)
    if not url:
        return _MEMORY.setdefault("", MemoryStore())
    kind, driver_url = normalize_url(url)
    if kind == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(driver_url, settings)
    if kind == "redis":
        from .redis import RedisStore

        return RedisStore(driver_url)
    # Shared by URL within a process, like memory:// brokers and backends.
    return _MEMORY.setdefault(url, MemoryStore())
