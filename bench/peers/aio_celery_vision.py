"""aio-celery's ``vision`` task: its app with the pipeline's clients as the app context."""

from __future__ import annotations

from typing import Any

from aio_celery import Task

from asyncworker.contrib.vision import pipeline

from . import vision as clients
from .aio_celery_app import app

app.define_app_context(clients.clients)


@app.task(name="bench.vision", bind=True)
async def vision(self: Task, s3_path: str) -> dict[str, Any]:
    """S3 get, one model call, S3 put."""
    return await pipeline.analyse_image(self.app.context, s3_path,
                                        f"analysis/{self.request.id}.json")
