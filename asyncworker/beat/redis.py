"""Tick claims and entry history in Redis (redis-py asyncio).

Keys, under ``asyncworker:beat:``:

- ``tick:<entry>:<fire time>``: one string per claimed tick, ``unsent:<node>``
  or ``sent:<node>``, written by ``SET NX EX`` (only one caller's ``SET``
  succeeds). Claims expire after :data:`CLAIM_TTL` seconds, long after the
  scheduler stops looking at a tick, so sent claims need no pruning.
- ``unsent``: a sorted set of the claims not yet sent, scored by claim time,
  for take-overs to find (a member whose claim expired is dropped).
- ``history:<entry>``: a hash of the entry's anchor and last fire.

Each change is a Lua script, so a claim, its place in ``unsent`` and the
history's advance happen together or not at all, and two replicas never take
over the same tick. Claim times come from the server's ``TIME``, so replicas'
clocks need not agree. Batches are cut into scripts of :data:`CHUNK` ticks
(short enough not to stall other clients) sent in one pipeline: one round trip.

Fire times are stored as UTC ISO 8601 (``isoformat``), which round-trips to
the microsecond. Scripts name keys they find, so this needs one Redis server
(not a cluster). Run-time entries are not kept here: they need PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from ..logging import redact_url
from .entries import Tick
from .store import History, TickStore

PREFIX = "asyncworker:beat:"
#: Seconds a claim is kept (sent or not): two days.
CLAIM_TTL = 2 * 24 * 3600
#: Ticks per script run.
CHUNK = 1_000
#: Most ticks taken over per call (as in the PostgreSQL store).
TAKE_OVER_LIMIT = 10_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The server clock in microseconds, as a string (Lua numbers print with 14 digits).
_NOW = """
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
"""

# KEYS: unsent, then per tick its claim key and its entry's history key.
# ARGV: node, ttl, then per tick its unsent member, fire time (ISO) and fire time
# (microseconds since the epoch). Returns the (1-based) positions of the ticks won.
_CLAIM_LUA = _NOW + """
local node, ttl = ARGV[1], ARGV[2]
local won, latest, order = {}, {}, {}
for i = 1, (#KEYS - 1) / 2 do
  local a = 2 + (i - 1) * 3
  local member, iso, us = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if redis.call('SET', KEYS[2 * i], 'unsent:' .. node, 'NX', 'EX', ttl) then
    redis.call('ZADD', KEYS[1], now, member)
    won[#won + 1] = i
    local history = KEYS[2 * i + 1]
    local best = latest[history]
    if not best then
      order[#order + 1] = history
    end
    if not best or tonumber(best[2]) < tonumber(us) then
      latest[history] = {iso, us}
    end
  end
end
for _, history in ipairs(order) do
  -- Only an anchored entry has a history to advance (the scheduler anchors first).
  if redis.call('HEXISTS', history, 'anchor') == 1 then
    local fire = latest[history]
    local current = redis.call('HGET', history, 'last_fire_us')
    if not current or tonumber(current) < tonumber(fire[2]) then
      redis.call('HSET', history, 'last_fire', fire[1], 'last_fire_us', fire[2])
    end
  end
end
return won
"""

# KEYS: the history; ARGV: the new last fire (ISO), and in microseconds. Forward only,
# and only for an anchored entry, as a claim advances it.
_ADVANCE_LUA = """
if redis.call('HEXISTS', KEYS[1], 'anchor') == 1 then
  local current = redis.call('HGET', KEYS[1], 'last_fire_us')
  if not current or tonumber(current) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'last_fire', ARGV[1], 'last_fire_us', ARGV[2])
  end
end
return 0
"""

# KEYS: unsent, then the ticks' claim keys; ARGV: the ticks' unsent members.
_MARK_SENT_LUA = """
for i = 2, #KEYS do
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
  local value = redis.call('GET', KEYS[i])
  if value and string.sub(value, 1, 7) == 'unsent:' then
    redis.call('SET', KEYS[i], 'sent:' .. string.sub(value, 8), 'KEEPTTL')
  end
end
return 0
"""

# KEYS: unsent; ARGV: claim key prefix, node, timeout (seconds), limit. The claim
# keys are named by the members found, so they cannot be passed in KEYS.
# Returns member, previous claimer, member, previous claimer, ...
_TAKE_OVER_LUA = _NOW + """
local cutoff = tonumber(now) - math.floor(tonumber(ARGV[3]) * 1000000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',
                         '(' .. string.format('%d', cutoff), 'LIMIT', 0, tonumber(ARGV[4]))
local taken = {}
for _, member in ipairs(stale) do
  local key = ARGV[1] .. member
  local value = redis.call('GET', key)
  if value and string.sub(value, 1, 7) == 'unsent:' then
    redis.call('SET', key, 'unsent:' .. ARGV[2], 'KEEPTTL')
    redis.call('ZADD', KEYS[1], now, member)
    taken[#taken + 1] = member
    taken[#taken + 1] = string.sub(value, 8)
  else
    -- Expired, or sent: nothing left to take over.
    redis.call('ZREM', KEYS[1], member)
  end
end
return taken
"""

# KEYS: unsent; ARGV: claim key prefix, claim time (microseconds), limit.
# Drops members claimed before that time whose claim key has expired.
_PRUNE_LUA = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2],
                       'LIMIT', 0, tonumber(ARGV[3]))
local dropped = 0
for _, member in ipairs(old) do
  if redis.call('EXISTS', ARGV[1] .. member) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[1], member)
  end
end
return dropped
"""


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _member(tick: Tick) -> str:
    """``<entry>:<fire time>``: the tick's member of ``unsent`` and its claim key's tail."""
    return f"{tick.entry}:{_utc(tick.fire_time).isoformat()}"


def _tick(member: str) -> Tick:
    # The fire time is UTC ISO 8601 ("...+00:00": three colons); the entry may hold colons.
    entry, *fire = member.rsplit(":", 4)
    return Tick(entry, datetime.fromisoformat(":".join(fire)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore(TickStore):
    """Claims by ``SET NX``; no run-time entries."""

    supports_entries = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = PREFIX
        self.unsent = f"{PREFIX}unsent"
        self._client: aioredis.Redis | None = None
        self._claim = _Script(_CLAIM_LUA)
        self._mark_sent = _Script(_MARK_SENT_LUA)
        self._take_over = _Script(_TAKE_OVER_LUA)
        self._prune = _Script(_PRUNE_LUA)
        self._advance = _Script(_ADVANCE_LUA)

    def describe(self) -> str:
        return redact_url(self.url)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisStore.setup() was not called")
        return self._client

    async def setup(self) -> None:
        if self._client is not None:
            return
        client = aioredis.from_url(self.url, decode_responses=True)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _tick_key(self, tick: Tick) -> str:
        return f"{self.prefix}tick:{_member(tick)}"

    def _history_key(self, name: str) -> str:
        return f"{self.prefix}history:{name}"

    async def history(self, names: Sequence[str], now: datetime) -> dict[str, History]:
        if not names:
            return {}
        anchor = _utc(now).isoformat()
        # One transaction: the anchor is read back as written (a forget cannot slip in).
        async with self.client.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.hsetnx(self._history_key(name), "anchor", anchor)
                pipe.hmget(self._history_key(name), ["anchor", "last_fire"])
            replies = await pipe.execute()
        found: dict[str, History] = {}
        for name, (stored, last_fire) in zip(names, replies[1::2], strict=True):
            found[name] = History(datetime.fromisoformat(_text(stored)),
                                  datetime.fromisoformat(_text(last_fire))
                                  if last_fire is not None else None)
        return found

    async def claim(self, ticks: Sequence[Tick], node: str) -> list[Tick]:
        calls = []
        for start in range(0, len(ticks), CHUNK):
            chunk = ticks[start:start + CHUNK]
            keys = [self.unsent]
            args: list[str | int] = [node, CLAIM_TTL]
            for tick in chunk:
                keys += [self._tick_key(tick), self._history_key(tick.entry)]
                fire = _utc(tick.fire_time)
                args += [_member(tick), fire.isoformat(), _micros(fire)]
            calls.append((keys, args))
        won: list[Tick] = []
        for start, positions in zip(range(0, len(ticks), CHUNK),
                                    await self._run(self._claim, calls), strict=True):
            won.extend(Tick(t.entry, _utc(t.fire_time))
                       for t in (ticks[start + int(i) - 1] for i in positions))
        return won

    async def mark_sent(self, ticks: Sequence[Tick]) -> None:
        calls = []
        for start in range(0, len(ticks), CHUNK):
            chunk = ticks[start:start + CHUNK]
            calls.append(([self.unsent, *(self._tick_key(t) for t in chunk)],
                          [_member(t) for t in chunk]))
        await self._run(self._mark_sent, calls)

    async def take_over(self, node: str, timeout: float) -> list[tuple[Tick, str]]:
        [reply] = await self._run(self._take_over, [(
            [self.unsent], [f"{self.prefix}tick:", node, repr(float(timeout)),
                            TAKE_OVER_LIMIT])])
        return [(_tick(_text(member)), _text(previous))
                for member, previous in zip(reply[::2], reply[1::2], strict=True)]

    async def advance(self, name: str, upto: datetime) -> None:
        upto = _utc(upto)
        await self._run(self._advance, [([self._history_key(name)],
                                         [upto.isoformat(), _micros(upto)])])

    async def forget(self, name: str) -> None:
        await self.client.delete(self._history_key(name))

    async def prune(self, before: datetime) -> None:
        # Claim keys expire by themselves; what may linger is an unsent member
        # whose key expired (a take-over would drop it too).
        await self._run(self._prune, [([self.unsent], [f"{self.prefix}tick:",
                                                       _micros(_utc(before)),
                                                       TAKE_OVER_LIMIT])])

    async def _run(self, script: _Script,
                   calls: Sequence[tuple[Sequence[str], Sequence[str | int]]]) -> list[Any]:
        """Run ``script`` once per (keys, args) in one pipeline; returns the replies."""
        if not calls:
            return []
        replies = await self._pipeline(script, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Not cached on the server yet (or flushed): those runs did nothing; load, rerun.
            await self.client.script_load(script.source)
            for i, reply in zip(missing, await self._pipeline(script, [calls[i] for i in missing]),
                                strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipeline(self, script: _Script,
                        calls: Sequence[tuple[Sequence[str], Sequence[str | int]]]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))


class _Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` names it by)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
