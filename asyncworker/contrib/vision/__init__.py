"""The Growbin ``vision_analysis`` pipeline as a plugin: S3 storage and a vision model.

:class:`VisionPlugin` brings the tasks (:mod:`.tasks`), the clients they share
(:mod:`.pipeline`) and the ``vision`` settings section (:class:`VisionSettings`).
The building blocks (:mod:`.classification`, :mod:`.gpt`, :mod:`.s3`) are
plain functions and clients that the benchmark's Celery twin reuses too.
"""

from .plugin import VisionPlugin, deployment_config
from .settings import VisionSettings

__all__ = ["VisionPlugin", "VisionSettings", "deployment_config"]
