"""An OpenAI-compatible Chat Completions client on one shared aiohttp session.

It sorts failures into the two kinds a task treats differently: worth retrying
later (429, 5xx, timeouts, refused connections) and not (other 4xx, answers that
are not a valid classification).

The model calls go through aiohttp, the HTTP stack aiobotocore already brings
for S3: a py-spy profile of the vision step put httpx, httpcore, h11 and anyio
at about a fifth of its CPU (1–1.5 ms per call, most of it per-request
bookkeeping: anyio cancel scopes around every read and write, the pool's scan
of its connections); aiohttp does the same request for a fraction of that
(``bench/results/vision-cost.md``). :class:`ShardedClient` stays for callers
who want an httpx client that holds hundreds of connections.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx

from .classification import Classification, answer_text, chat_request, parse_answer
from .settings import VisionSettings

#: Longest ``Retry-After`` honoured as given; a server asking for more gets this.
MAX_RETRY_AFTER = 600.0


class GPTError(Exception):
    """The Chat Completions call failed."""


class GPTRejected(GPTError):
    """A 4xx other than 429: the request itself is wrong, so retrying cannot help."""


class GPTUnavailable(GPTError):
    """A 429, a 5xx, a timeout or a connection failure: retry later.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it gave one.
    """

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.status, self.retry_after))

    def delay(self, attempt: int, cap: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``.

        The server's ``Retry-After`` when given; otherwise exponential backoff
        (1, 2, 4 … seconds, at most ``cap``) with jitter on its upper half, so
        workers that failed together do not return together.
        """
        if self.retry_after is not None:
            return min(max(self.retry_after, 0.0), MAX_RETRY_AFTER)
        ceiling = min(cap, float(2 ** min(attempt, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class ShardedClient:
    """One logical ``httpx.AsyncClient`` made of several small ones.

    httpcore's pool does work proportional to its connections (and to queued
    requests) on every request, so one pool of hundreds of connections spends
    more CPU on bookkeeping than on HTTP: measured here, 23 ms of CPU per
    request at 200 connections against 1.5 ms with pools of 8. Requests go to
    the shard with the fewest in flight; the shards share one TLS context.
    """

    SHARD_SIZE = 8

    def __init__(self, pool_size: int, **options: Any) -> None:
        count = max(1, -(-pool_size // self.SHARD_SIZE))
        size = min(pool_size, self.SHARD_SIZE) if pool_size > 0 else self.SHARD_SIZE
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        options.setdefault("verify", httpx.create_ssl_context())
        self.shards = [httpx.AsyncClient(limits=limits, **options) for _ in range(count)]
        self._busy = [0] * count

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``POST`` through the least busy shard."""
        index = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            return await self.shards[index].post(url, **kwargs)
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        """Close every shard."""
        for shard in self.shards:
            await shard.aclose()

    async def __aenter__(self) -> ShardedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ModelSession:
    """The model API's connection pool: one aiohttp session of ``pool_size`` connections.

    Timeouts as httpx counts them: ``connect`` for opening a connection, ``timeout``
    for each wait on the server (not for the whole call, which a slow upload of a
    large image would otherwise exhaust).
    """

    def __init__(self, base_url: str, pool_size: int, timeout: float, connect: float,
                 headers: Mapping[str, str]) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.pool_size = max(pool_size, 1)
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect,
                                             sock_read=timeout)
        self.headers = {"Content-Type": "application/json", **headers}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ModelSession:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.pool_size),
            timeout=self.timeout, headers=self.headers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_json(self, path: str, body: Any) -> tuple[int, Mapping[str, str], bytes]:
        """``POST`` ``body`` as JSON; the status, headers and body of the answer."""
        if self._session is None:
            raise RuntimeError("the model API session is not open")
        async with self._session.post(self.base_url + path,
                                      data=json.dumps(body).encode()) as response:
            return response.status, response.headers, await response.read()


def build_http_client(settings: VisionSettings, pool_size: int) -> ModelSession:
    """The worker's HTTP client for the model API: explicit timeouts, ``pool_size``
    connections (the worker's concurrency: one per task that can be waiting on it)."""
    api_key = settings.gpt_api_key or os.environ.get("OPENAI_API_KEY", "")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return ModelSession(settings.gpt_base_url, pool_size, settings.gpt_timeout,
                        settings.gpt_connect_timeout, headers)


class ChatClient:
    """Asks the model to classify one image."""

    def __init__(self, http: ModelSession, model: str) -> None:
        self.http = http
        self.model = model

    async def classify(self, image_url: str, question: str | None = None) -> Classification:
        """One Chat Completions call, its answer validated.

        Raises :class:`GPTUnavailable`, :class:`GPTRejected`, or
        :class:`~asyncworker.contrib.vision.classification.MalformedAnswer`.
        """
        body = chat_request(self.model, image_url, question)
        try:
            status, headers, payload = await self.http.post_json("chat/completions", body)
        except TimeoutError as exc:
            raise GPTUnavailable(f"model API timed out ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise GPTUnavailable(f"model API unreachable ({type(exc).__name__}: {exc})") from None
        text = payload.decode("utf-8", "replace")
        if status == 429 or status >= 500:
            raise GPTUnavailable(f"model API answered {status}: {text[:300]}",
                                 status, parse_retry_after(headers))
        if status >= 400:
            raise GPTRejected(f"model API answered {status}: {text[:500]}")
        try:
            completion = json.loads(payload)
        except ValueError:
            completion = text
        return parse_answer(answer_text(completion))
