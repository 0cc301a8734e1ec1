"""The ``vision_analysis`` pipeline under the names Celery producers already send.

``image_upload_task`` puts a local image in S3; ``gpt5_analysis_task`` has the
model classify it and stores the analysis beside it. Chained, the first task's
``{"s3_path": ...}`` is the second one's argument.

Failures: the model API's 429 and 5xx answers, timeouts and refused connections
are retried (``Retry-After`` honoured, otherwise exponential backoff) up to
``gpt_max_retries``; a malformed answer and a missing S3 object fail at once.

The functions are plain; :func:`register` makes them tasks of an app (the
vision plugin calls it), so this module needs no app of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import pipeline
from .gpt import GPTUnavailable
from .settings import VisionSettings

if TYPE_CHECKING:
    from ...app import App
    from ...task import Task

UPLOAD = "workers.storage.tasks.image_upload_task"
ANALYSIS = "workers.ai.tasks.gpt5_analysis_task"


async def image_upload_task(self: Task, image_path: str) -> dict[str, str]:
    """Upload the image at ``image_path`` (on this worker's disk) to S3."""
    clients = pipeline.clients_of(self.app)
    s3_path = await pipeline.upload_image(clients, image_path, f"images/{self.request.id}")
    return {"s3_path": s3_path}


async def gpt5_analysis_task(self: Task, s3_path: str | dict[str, Any],
                             question: str | None = None, **context: Any) -> dict[str, Any]:
    """Classify the image at ``s3_path`` for waste sorting; store and return the analysis.

    ``s3_path`` may be the upload task's whole result (a chain passes it on).
    Extra keyword arguments from the producer are accepted and ignored.
    """
    path = str(s3_path["s3_path"]) if isinstance(s3_path, dict) else s3_path
    clients = pipeline.clients_of(self.app)
    settings = self.app.settings.section(VisionSettings)
    try:
        return await pipeline.analyse_image(
            clients, path, f"analysis/{self.request.id}.json", question)
    except GPTUnavailable as exc:
        countdown = exc.delay(self.request.retries, settings.gpt_retry_backoff_max)
        raise self.retry(exc=exc, countdown=countdown,
                         max_retries=settings.gpt_max_retries) from None


def register(app: App) -> dict[str, Task]:
    """Register both tasks on ``app`` (bound: they read ``self.request``); returns them."""
    return {name: app.task(name=name, bind=True)(fn)
            for name, fn in ((UPLOAD, image_upload_task), (ANALYSIS, gpt5_analysis_task))}
