"""The default app served when ``worker`` gets no ``--app``.

It runs the sample tasks and the vision plugin, with the Growbin deployment's
settings read from the copy of ``vision_analysis.toml`` shipped inside the
package (so a wheel started from any directory finds it); ``--config`` or
``ASYNCWORKER_CONFIG`` names another file instead.
"""

from __future__ import annotations

from ..app import App
from ..contrib.vision import VisionPlugin, deployment_config
from . import sample

app = App("asyncworker", config_file=deployment_config())
sample.register(app)
app.use(VisionPlugin())
