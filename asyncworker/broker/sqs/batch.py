"""SQS's batch calls, filled by whatever is waiting while the previous call runs.

Deleting each acked message on its own is one HTTP request per task;
``DeleteMessageBatch`` (and ``ChangeMessageVisibilityBatch``) take up to ten.
Nothing waits to fill a batch: the first entry goes at once, and entries that
arrive while a call is under way go together in the next one, so a lone ack
is not delayed and a busy worker sends full batches.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from ...logging import get_logger

log = get_logger("broker")

#: SQS takes at most ten entries per batch call.
MAX_BATCH = 10

#: ``send(queue_url, entries)``: the batch call's response ({"Failed": [...]}).
Send = Callable[[str, list[dict[str, Any]]], Awaitable[dict[str, Any]]]


class Batcher:
    """Entries for one batch call, sent per queue URL in batches of up to ten."""

    def __init__(self, send: Send, what: str, senders: int = 2) -> None:
        self.send = send
        self.what = what
        self.senders = senders
        self._waiting: dict[str, collections.deque[
            tuple[dict[str, Any], asyncio.Future[bool]]]] = {}
        self._running: dict[str, set[asyncio.Task[None]]] = {}

    async def submit(self, url: str, entry: dict[str, Any]) -> bool:
        """Send ``entry`` (without its ``Id``) in the next batch; True once SQS took it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(url, collections.deque()).append((entry, future))
        running = self._running.setdefault(url, set())
        if len(running) < self.senders:
            task = asyncio.create_task(self._drain(url))
            running.add(task)
            task.add_done_callback(running.discard)
        # Shielded: a cancelled caller must not cancel the others' batch.
        return await asyncio.shield(future)

    async def _drain(self, url: str) -> None:
        waiting = self._waiting[url]
        while waiting:
            batch = [waiting.popleft() for _ in range(min(MAX_BATCH, len(waiting)))]
            entries = [{**entry, "Id": str(i)} for i, (entry, _) in enumerate(batch)]
            try:
                response = await self.send(url, entries)
            except Exception as exc:
                log.warning(f"SQS {self.what} failed", count=len(batch), error=repr(exc))
                failed = {str(i): repr(exc) for i in range(len(batch))}
            else:
                failed = {f.get("Id"): f.get("Code") for f in response.get("Failed") or []}
                if failed:
                    log.warning(f"SQS {self.what} refused for some messages",
                                count=len(failed), codes=sorted(set(map(str, failed.values()))))
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(str(i) not in failed)

    async def flush(self) -> None:
        """Wait until everything submitted so far is sent."""
        while any(self._running.values()):
            await asyncio.gather(*(t for ts in self._running.values() for t in ts),
                                 return_exceptions=True)
