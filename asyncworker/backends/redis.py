"""Redis result backend (redis-py asyncio), writing what Celery's Redis backend writes.

Key ``celery-task-meta-<id>``; value the ``result_serializer`` encoding (JSON by
default) of ``{status, result, traceback, children, date_done, task_id, ...}``.
Each write is ``SETEX`` plus ``PUBLISH`` on the key (Celery clients wait on that
channel), and a stored SUCCESS is never replaced: a Lua script checks and
writes in one step, where Celery reads and writes in two.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis

from ..backoff import BackoffPolicy
from ..logging import redact_url
from ..settings import Settings
from ..task import Request
from .base import ChordJoin, ResultBackend, ResultCodec, StoredResult, TaskOutcome
from .batching import BatchWriter, Linger

TASK_PREFIX = "celery-task-meta-"
GROUP_PREFIX = "celery-taskset-meta-"

# KEYS[1] result key; ARGV[1] value, ARGV[2] ttl seconds (0: none).
_STORE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


# Chord join, compatible with Celery 5.7's keys so both kinds of worker can
# share a chord. KEYS: .j results (sorted by header index), .t size adjustment,
# .s header size (set by whoever applies the chord), .d members already counted,
# .c claim token, then "done". ARGV: task id, encoded [1, id, state, result],
# header index, ttl, claim ttl, claim token.
_CHORD_PART_LUA = """
if redis.call('GET', KEYS[5]) == 'done' then
  return {-1, 0, 0, 0}
end
if redis.call('SADD', KEYS[4], ARGV[1] .. ':' .. ARGV[3]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
end
local count = redis.call('ZCARD', KEYS[1])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
local diff = tonumber(redis.call('GET', KEYS[2]) or '0')
local size = redis.call('GET', KEYS[3])
local claimed = 0
if size and count == tonumber(size) + diff then
  if redis.call('SET', KEYS[5], ARGV[6], 'NX', 'EX', tonumber(ARGV[5])) then
    claimed = 1
  end
end
return {count, diff, tonumber(size or '0'), claimed}
"""

# KEYS: .c, .j, .t, .s, .d; ARGV: claim token, seconds to keep the "done" marker.
_CHORD_DONE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
"""

CHORD_CLAIM_SECONDS = 10
CHORD_DONE_SECONDS = 300


class _RedisChordJoin(ChordJoin):
    def __init__(self, backend: RedisBackend, group_id: str, token: str,
                 results: list[tuple[str, str, Any]]) -> None:
        self.backend = backend
        self.group_id = group_id
        self.token = token
        self.results = results

    async def done(self) -> None:
        keys = self.backend.chord_keys(self.group_id)
        await self.backend._chord_done_script(
            keys=[keys[".c"], keys[".j"], keys[".t"], keys[".s"], keys[".d"]],
            args=[self.token, CHORD_DONE_SECONDS])


class RedisBackend(ResultBackend):
    """Celery-compatible Redis result store with pipelined, batched writes."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.codec = ResultCodec(settings.result_serializer)
        self.expires = int(settings.result_expires or 0)
        self.client: aioredis.Redis = aioredis.from_url(url)
        self._store_script = self.client.register_script(_STORE_LUA)
        self._chord_part_script = self.client.register_script(_CHORD_PART_LUA)
        self._chord_done_script = self.client.register_script(_CHORD_DONE_LUA)
        self._writer = BatchWriter(self._write_many, settings.result_batch_size,
                                   self.describe(), BackoffPolicy.from_settings(settings),
                                   linger=Linger.from_settings(settings))

    def describe(self) -> str:
        """The server URL with its password hidden."""
        return redact_url(self.url)

    async def setup(self) -> None:
        """Start the writer (the client connects on first use and reconnects itself)."""
        self._writer.start()

    def batch_writer(self) -> BatchWriter:
        return self._writer

    async def close(self) -> None:
        """Write what is queued and disconnect."""
        await self._writer.close()
        await self.client.aclose()

    def meta(self, outcome: TaskOutcome) -> dict[str, Any]:
        """The document Celery's Redis backend stores for one state."""
        meta: dict[str, Any] = {
            "status": outcome.state,
            "result": outcome.result,
            "traceback": outcome.traceback,
            "children": outcome.children or [],
            "date_done": datetime.now(UTC).isoformat() if outcome.ready else None,
        }
        req = outcome.request
        if req is not None:
            if req.group:
                meta["group_id"] = req.group
            if req.parent_id:
                meta["parent_id"] = req.parent_id
            if self.settings.result_extended:
                meta.update(name=req.task, args=req.args, kwargs=req.kwargs,
                            worker=req.hostname, retries=req.retries,
                            queue=req.delivery_info.get("routing_key"))
        meta["task_id"] = outcome.task_id
        return meta

    async def store(self, outcome: TaskOutcome) -> None:
        """SETEX + PUBLISH the state (batched), unless SUCCESS is already stored."""
        value = self.codec.encode(self.meta(outcome))
        await self._writer.submit((TASK_PREFIX + outcome.task_id, value), outcome.runtime)

    async def _write_many(self, rows: Sequence[tuple[str, bytes]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value in rows:
                await self._store_script(keys=[key], args=[value, self.expires], client=pipe)
            await pipe.execute()

    # -- chords (Celery's Redis join) ------------------------------------------
    needs_chord_unlock = False

    @staticmethod
    def chord_keys(group_id: str) -> dict[str, str]:
        """The join keys of a chord's header group."""
        base = GROUP_PREFIX + group_id
        return {suffix: base + suffix for suffix in (".j", ".t", ".s", ".d", ".c")}

    async def set_chord_size(self, group_id: str, size: int) -> None:
        """Start a chord run: its header size, and no stale claim from an earlier run."""
        keys = self.chord_keys(group_id)
        await self.client.delete(keys[".c"])
        await self.client.set(keys[".s"], size, ex=self.expires or None)

    async def chord_part_return(self, request: Request, state: str,
                                result: Any) -> ChordJoin | None:
        """Add this header result; when it completes the header and we win the claim,
        return all results in header order."""
        if not request.group:
            return None
        keys = self.chord_keys(request.group)
        index = "+inf" if request.group_index is None else str(request.group_index)
        token = uuid.uuid4().hex
        value = self.codec.encode([1, request.id, state, result])
        count, _diff, size, claimed = await self._chord_part_script(
            keys=[keys[".j"], keys[".t"], keys[".s"], keys[".d"], keys[".c"]],
            args=[request.id, value, index, self.expires, CHORD_CLAIM_SECONDS, token])
        if count == -1 or not claimed or not size:
            return None
        results = []
        for raw in await self.client.zrange(keys[".j"], 0, -1):
            _, task_id, part_state, part_result = self.codec.decode(cast(bytes, raw))
            results.append((task_id, part_state, part_result))
        return _RedisChordJoin(self, request.group, token, results)

    REVOKED_KEY = "asyncworker-revoked"

    async def save_revoked(self, task_id: str, when: float) -> None:
        """Add one revoked id to a sorted set scored by time."""
        await self.client.zadd(self.REVOKED_KEY, {task_id: when})

    async def load_revoked(self, since: float) -> list[tuple[str, float]]:
        """Revoked ids newer than ``since``; older ones are removed."""
        await self.client.zremrangebyscore(self.REVOKED_KEY, "-inf", f"({since}")
        items = await self.client.zrangebyscore(self.REVOKED_KEY, since, "+inf",
                                                withscores=True)
        pairs = cast(list[tuple[Any, float]], items)
        return [(k.decode() if isinstance(k, bytes) else str(k), float(s)) for k, s in pairs]

    async def get(self, task_id: str) -> StoredResult | None:
        """Read and decode one task's state."""
        raw = await self.client.get(TASK_PREFIX + task_id)
        if raw is None:
            return None
        meta = self.codec.decode(raw)
        done = meta.get("date_done")
        return StoredResult(task_id, meta["status"], meta.get("result"), meta.get("traceback"),
                            datetime.fromisoformat(done) if isinstance(done, str) else done)
