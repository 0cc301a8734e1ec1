"""The default app served when ``worker`` gets no ``--app``.

It reads the deployment's settings (``config/vision_analysis.toml`` unless
``ASYNCWORKER_CONFIG`` names another file) and registers the sample tasks and
the vision pipeline tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..app import App

_CONFIG = Path(__file__).resolve().parents[2] / "config" / "vision_analysis.toml"

_default_config = str(_CONFIG) if _CONFIG.exists() else None
app = App("asyncworker", config_file=os.environ.get("ASYNCWORKER_CONFIG") or _default_config)

from . import sample, vision  # noqa: E402,F401  (registers tasks on app)
