"""The vision plugin: the pipeline's tasks, their clients and their settings."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

from . import tasks
from .pipeline import VisionClientsPlugin

if TYPE_CHECKING:
    from ...app import App

#: The Growbin deployment's settings file, shipped inside the package.
DEPLOYMENT_CONFIG = "vision_analysis.toml"


def deployment_config() -> Traversable:
    """The packaged ``vision_analysis.toml``: the deployment's queues and routes."""
    return files(__name__.rpartition(".")[0]) / DEPLOYMENT_CONFIG


class VisionPlugin(VisionClientsPlugin):
    """The vision pipeline: ``app.use(VisionPlugin())``, or in the settings
    ``worker_plugins = ["asyncworker.contrib.vision:VisionPlugin"]``.

    Registers ``workers.storage.tasks.image_upload_task`` and
    ``workers.ai.tasks.gpt5_analysis_task``, the lifespan hook that opens one S3
    client and one model API client per worker, and the ``vision`` settings section.
    """

    name = "vision"

    def install(self, app: App) -> None:
        """The clients' lifespan hook and both tasks."""
        super().install(app)
        tasks.register(app)
