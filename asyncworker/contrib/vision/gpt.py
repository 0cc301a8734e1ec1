"""An OpenAI-compatible Chat Completions client on one shared ``httpx.AsyncClient``.

It sorts failures into the two kinds a task treats differently: worth retrying
later (429, 5xx, timeouts, refused connections) and not (other 4xx, answers that
are not a valid classification).
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

import httpx

from .classification import Classification, answer_text, chat_request, parse_answer
from .http_transport import AsyncioTransport
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


def parse_retry_after(headers: httpx.Headers) -> float | None:
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
    """The model API's ``httpx.AsyncClient``, with a pool of ``pool_size`` connections.

    The name is from when it split httpcore's pool into shards of 8: httpcore's
    pool does work proportional to its connections on every request (23 ms of
    CPU per request at 200 connections against 1.5 ms with pools of 8,
    measured here). Its transport is now :class:`~.http_transport.AsyncioTransport`,
    whose pool costs the same per request at any size, so one client serves. A
    ``transport`` in ``options`` (a mock in tests) replaces it; ``verify`` is
    httpx's (an ``ssl.SSLContext``, ``True`` or ``False``). That transport speaks
    to the server directly, so when the environment names a proxy for the base
    URL (``HTTPS_PROXY`` and the like, which httpx honours) httpx's own
    transport is kept instead: a proxied deployment keeps working, at httpx's cost.
    """

    def __init__(self, pool_size: int, **options: Any) -> None:
        if "transport" not in options and _env_proxy(str(options.get("base_url", ""))):
            size = max(1, pool_size)
            options["limits"] = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            #: None: httpx's own transport (a proxy is in the way).
            self.transport: httpx.AsyncBaseTransport | None = None
            self.client = httpx.AsyncClient(**options)
            return
        if "transport" not in options:
            verify = options.pop("verify", True)
            context = verify if isinstance(verify, ssl.SSLContext) else (
                httpx.create_ssl_context(verify=verify))
            options["transport"] = AsyncioTransport(pool_size, ssl_context=context)
        self.transport = options["transport"]
        self.client = httpx.AsyncClient(**options)

    def url(self, path: str) -> httpx.URL:
        """``path`` joined to the base URL, once: requests given the result skip httpx's
        URL parsing and joining (about 60 µs a request here)."""
        return self.client.base_url.join(path)

    async def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``POST`` through the client."""
        return await self.client.post(url, **kwargs)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self.client.aclose()

    async def __aenter__(self) -> ShardedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _env_proxy(url: str) -> bool:
    """Whether the environment's proxy settings apply to ``url`` (as httpx reads them)."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def build_http_client(settings: VisionSettings, pool_size: int) -> ShardedClient:
    """The worker's HTTP client for the model API.

    Timeouts are explicit and the pool holds ``pool_size`` connections.
    """
    # httpx logs every request at INFO; at hundreds per second that drowns the task log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    api_key = settings.gpt_api_key or os.environ.get("OPENAI_API_KEY", "")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return ShardedClient(
        pool_size,
        base_url=settings.gpt_base_url.rstrip("/") + "/",
        headers=headers,
        timeout=httpx.Timeout(settings.gpt_timeout, connect=settings.gpt_connect_timeout),
    )


class ChatClient:
    """Asks the model to classify one image."""

    def __init__(self, http: ShardedClient, model: str) -> None:
        self.http = http
        self.model = model
        self._completions = http.url("chat/completions")

    async def classify(self, image_url: str, question: str | None = None) -> Classification:
        """One Chat Completions call, its answer validated.

        Raises :class:`GPTUnavailable`, :class:`GPTRejected`, or
        :class:`~asyncworker.contrib.vision.classification.MalformedAnswer`.
        """
        body = chat_request(self.model, image_url, question)
        try:
            response = await self.http.post(self._completions, json=body)
        except httpx.TimeoutException as exc:
            raise GPTUnavailable(f"model API timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise GPTUnavailable(f"model API unreachable ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise GPTUnavailable(f"model API answered {status}: {response.text[:300]}",
                                 status, parse_retry_after(response.headers))
        if status >= 400:
            raise GPTRejected(f"model API answered {status}: {response.text[:500]}")
        try:
            completion = response.json()
        except ValueError:
            completion = response.text
        return parse_answer(answer_text(completion))
