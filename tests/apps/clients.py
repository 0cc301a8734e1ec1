"""Clients the test apps' tasks share within a worker process."""

from __future__ import annotations

import os
from collections.abc import Callable

import redis.asyncio as aioredis


def lazy_redis(env_var: str) -> Callable[[], aioredis.Redis]:
    """A getter for one Redis client at the URL in ``env_var``, made on first use
    (inside the worker's event loop, not at import)."""
    client: aioredis.Redis | None = None

    def get() -> aioredis.Redis:
        nonlocal client
        if client is None:
            client = aioredis.from_url(os.environ[env_var])
        return client

    return get
