"""The vision pipeline's clients for a peer's worker: the same steps as asyncworker's row.

One S3 client and one model-API client per process, pools sized to the
concurrency, opened from the settings the bench passes in the environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from asyncworker.contrib.vision import pipeline
from asyncworker.contrib.vision.settings import VisionSettings

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[pipeline.VisionClients]:
    """The clients, open while the worker runs."""
    settings = VisionSettings(
        s3_endpoint_url=os.environ["BENCH_S3_URL"], s3_access_key_id="testing",
        s3_secret_access_key="testing", gpt_base_url=os.environ["BENCH_GPT_URL"],
        gpt_model=os.environ.get("BENCH_GPT_MODEL", "gpt-5"))
    async with pipeline.open_clients(settings, CONCURRENCY) as opened:
        yield opened
