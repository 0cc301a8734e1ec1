"""Which App a subcommand works on: ``-A/--app`` and ``--config``, shared by all."""

from __future__ import annotations

import argparse
from typing import Any

from ..app import App
from ..exceptions import ImproperlyConfigured
from ..plugins import import_object

DEFAULT_APP = "asyncworker.tasks:app"


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``)."""
    app = import_object(spec, "app")
    if not isinstance(app, App):
        raise ImproperlyConfigured(f"{spec!r} is not an asyncworker App")
    return app


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """``-A/--app`` and ``--config``: every subcommand takes them."""
    parser.add_argument("-A", "--app", default=DEFAULT_APP,
                        help=f"MODULE:ATTR of the App (default: {DEFAULT_APP})")
    parser.add_argument("--config", help="TOML settings file (default: ASYNCWORKER_CONFIG, "
                                         "else the App's own)")


def configured_app(args: argparse.Namespace, **overrides: Any) -> App:
    """The App ``args`` name, with ``--config`` and ``overrides`` applied.

    Its settings are loaded (so the plugins ``worker_plugins`` names are
    enabled); configuration errors raise :class:`ImproperlyConfigured`.
    """
    app = load_app(args.app)
    app.configure(config_file=args.config, **overrides)
    _ = app.settings
    return app
