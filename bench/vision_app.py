"""The ``vision`` workload for asyncworker: the production pipeline's analysis step.

Separate from :mod:`bench.apps` so the ``sleep`` and ``noop`` runs do not load
the S3 and HTTP libraries (the Celery side is split the same way).
"""

from __future__ import annotations

from typing import Any

from asyncworker.contrib.vision import pipeline
from asyncworker.task import Task

from .apps import app

pipeline.install(app)


@app.task(name="bench.vision", bind=True)
async def vision(self: Task, s3_path: str) -> dict[str, Any]:
    """S3 get, one model call, S3 put: what ``gpt5_analysis_task`` does."""
    clients = pipeline.clients_of(self.app)
    return await pipeline.analyse_image(clients, s3_path, f"analysis/{self.request.id}.json")
