"""The vision pipeline's steps, on clients shared by every task of a worker.

:class:`VisionClientsPlugin` brings the ``vision`` settings section and the
lifespan hook that opens the clients, without the tasks; :func:`install` adds
it to an app that runs its own tasks on these steps (the benchmark does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...plugins import Plugin
from . import s3, s3_tuning
from .classification import analysis_record, data_url
from .gpt import ChatClient, build_http_client
from .settings import VisionSettings

if TYPE_CHECKING:
    from ...app import App

IMAGE_MODES = ("data_url", "presigned_url")


@dataclass(slots=True)
class VisionClients:
    """One S3 client and one model client, opened at worker start-up."""

    s3: Any
    gpt: ChatClient
    bucket: str
    image_mode: str = "data_url"


@contextlib.asynccontextmanager
async def open_clients(settings: VisionSettings,
                       pool_size: int) -> AsyncIterator[VisionClients]:
    """Open the clients with connection pools of ``pool_size`` (the worker's concurrency)."""
    import aioboto3
    from aiobotocore.session import AioSession

    if settings.gpt_image_mode not in IMAGE_MODES:
        raise ValueError(f"gpt_image_mode must be one of {IMAGE_MODES}, "
                         f"not {settings.gpt_image_mode!r}")
    size = max(pool_size, 1)
    core = AioSession()
    s3_tuning.fast_timestamps(core)
    session = aioboto3.Session(botocore_session=core)
    async with (session.client("s3", **s3.client_options(settings, size, core)) as s3_client,
                build_http_client(settings, size) as http):
        s3_tuning.tune(s3_client)
        yield VisionClients(s3_client, ChatClient(http, settings.gpt_model),
                            settings.s3_bucket, settings.gpt_image_mode)


async def vision_clients(app: App) -> AsyncIterator[None]:
    """Lifespan hook: :class:`VisionClients` on ``app.state.vision`` while the worker runs."""
    settings = app.settings
    async with open_clients(settings.section(VisionSettings),
                            settings.worker_concurrency) as clients:
        app.state.vision = clients
        try:
            yield
        finally:
            del app.state.vision  # closed: clients_of says so instead of failing later


class VisionClientsPlugin(Plugin):
    """The ``vision`` settings section and the clients' lifespan hook; no tasks."""

    name = "vision-clients"
    settings = VisionSettings

    def install(self, app: App) -> None:
        """Open the clients when a worker of ``app`` starts."""
        app.lifespan(vision_clients)


def install(app: App) -> None:
    """Give ``app`` the vision settings and clients (unless a vision plugin already did)."""
    if not any(isinstance(p, VisionClientsPlugin) for p in app.plugins):
        app.use(VisionClientsPlugin())


def clients_of(app: App) -> VisionClients:
    """The clients the lifespan hook opened (a clear error outside a worker)."""
    clients: VisionClients | None = getattr(app.state, "vision", None)
    if clients is None:
        raise RuntimeError("the vision clients are not open: run the task in a worker "
                           "(or inside `async with app.running()`)")
    return clients


async def upload_image(clients: VisionClients, image_path: str, key_prefix: str) -> str:
    """Upload a local image file; returns its ``s3://`` path."""
    source = Path(image_path)
    data = await asyncio.to_thread(source.read_bytes)
    target = s3.S3Path(clients.bucket, f"{key_prefix.strip('/')}/{source.name}")
    await s3.put_bytes(clients.s3, target, data, s3.content_type_for(source.name))
    return str(target)


async def analyse_image(clients: VisionClients, s3_path: str, analysis_key: str,
                        question: str | None = None) -> dict[str, Any]:
    """Classify the image at ``s3_path`` and store the analysis as JSON next to it."""
    source = s3.S3Path.parse(s3_path)
    if clients.image_mode == "presigned_url":
        # Check it exists first: a presigned URL to nothing would fail inside the model API.
        await s3.ensure_exists(clients.s3, source)
        image_url = await s3.presigned_get_url(clients.s3, source)
    else:
        image_url = data_url(*await s3.get_bytes(clients.s3, source))
    classification = await clients.gpt.classify(image_url, question)
    target = s3.S3Path(source.bucket, analysis_key)
    analysis = analysis_record(classification, clients.gpt.model, str(source), str(target))
    await s3.put_bytes(clients.s3, target, json.dumps(analysis).encode(), "application/json")
    return analysis
