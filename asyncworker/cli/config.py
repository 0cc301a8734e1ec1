"""``asyncworker config``: the settings an App would run with, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from ..exceptions import ImproperlyConfigured
from ..plugins import CliCommand
from .apps import configured_app


class ConfigCommand(CliCommand):
    """Print the effective settings with where they came from; credentials hidden.

    The output is one JSON object: ``app``, ``sources`` (lowest priority first:
    the App's arguments, the TOML file read, the environment), ``plugins`` and
    ``settings`` (each plugin section as a table). Passwords in URLs and secret
    fields show as ``***``. Exit status 0, or 2 for a configuration error.
    """

    name = "config"
    help = "print the effective settings as JSON (credentials hidden)"

    def run(self, args: argparse.Namespace) -> int:
        """Load the app and its settings, and print them."""
        try:
            app = configured_app(args)
            settings = app.settings
        except (ImproperlyConfigured, ImportError) as exc:
            print(f"asyncworker: {exc}", file=sys.stderr)
            return 2
        report = {
            "app": args.app,
            "sources": [layer.name for layer in app.settings_sources()],
            "plugins": [plugin.name for plugin in app.plugins],
            "settings": settings.as_dict(redact=True),
        }
        print(json.dumps(report, indent=2))
        return 0
