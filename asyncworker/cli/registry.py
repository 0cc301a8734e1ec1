"""The subcommands ``python -m asyncworker`` knows: the built-in ones and plugins'.

A subcommand is a :class:`~asyncworker.plugins.CliCommand`. The built-in ones
are always there; a plugin adds its own from ``Plugin.cli_commands()``, found
on the App named by ``-A/--app`` (or the default app) and the plugins its
``worker_plugins`` setting enables. Every subcommand takes ``-A/--app`` and
``--config``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence

from .. import __version__
from ..exceptions import ImproperlyConfigured
from ..plugins import CliCommand
from .apps import add_app_arguments, configured_app


class Registry:
    """Subcommands by name; builds the argument parser."""

    def __init__(self, commands: Iterable[CliCommand] = ()) -> None:
        self.commands: dict[str, CliCommand] = {}
        for command in commands:
            self.add(command)

    def __contains__(self, name: object) -> bool:
        return name in self.commands

    def add(self, command: CliCommand) -> None:
        """Register ``command``; a different command under a taken name is an error."""
        present = self.commands.get(command.name)
        if present is not None and type(present) is not type(command):
            raise ImproperlyConfigured(
                f"two subcommands named {command.name!r}: {type(present).__qualname__} "
                f"and {type(command).__qualname__}")
        self.commands.setdefault(command.name, command)

    def add_plugin_commands(self, argv: Sequence[str]) -> None:
        """Add the subcommands of the plugins of the App that ``argv`` names.

        The App is loaded with its settings (``worker_plugins`` may enable more
        plugins); if that fails, the reason is printed and only the commands
        already registered remain.
        """
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        add_app_arguments(pre)
        try:
            known, _ = pre.parse_known_args(argv)
            app = configured_app(known)
            for plugin in app.plugins:
                for command in plugin.cli_commands():
                    self.add(command)
        except (argparse.ArgumentError, ImproperlyConfigured, ImportError) as exc:
            print(f"asyncworker: plugin subcommands unavailable: {exc}", file=sys.stderr)

    def parser(self) -> argparse.ArgumentParser:
        """The parser: one subparser per command, with the shared app options."""
        parser = argparse.ArgumentParser(prog="asyncworker",
                                         description="asyncio worker for Celery task queues")
        parser.add_argument("--version", action="version", version=f"asyncworker {__version__}")
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for command in self.commands.values():
            child = sub.add_parser(command.name, help=command.help, description=command.help)
            add_app_arguments(child)
            command.add_arguments(child)
            child.set_defaults(handler=command)
        return parser
