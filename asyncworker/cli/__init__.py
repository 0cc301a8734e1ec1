"""Command line: ``python -m asyncworker <subcommand> ...``.

Built in: ``worker`` (:mod:`.worker`), ``beat`` (:mod:`asyncworker.beat.cli`),
``dlq`` (:mod:`.dlq`), ``config`` (:mod:`.config`) and ``ping``
(:mod:`asyncworker.monitoring.ping`); plugins add more
(:mod:`.registry`). ``main`` is the
``asyncworker`` console script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..beat.cli import BeatCommand
from ..monitoring.ping import PingCommand
from ..plugins import CliCommand
from .apps import DEFAULT_APP, load_app
from .config import ConfigCommand
from .dlq import DlqCommand
from .registry import Registry
from .worker import WorkerCommand, loop_factory

__all__ = ["BUILTIN_COMMANDS", "DEFAULT_APP", "build_parser", "load_app", "loop_factory", "main"]

#: The subcommands every installation has.
BUILTIN_COMMANDS: tuple[CliCommand, ...] = (WorkerCommand(), BeatCommand(), DlqCommand(),
                                            ConfigCommand(), PingCommand())


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser: the built-in subcommands, and when ``argv`` does not
    start with one of them, those of the plugins of the App it names
    (``--version`` loads no App: it answers without reading any settings)."""
    registry = Registry(BUILTIN_COMMANDS)
    if not argv or (argv[0] not in registry and argv[0] != "--version"):
        registry.add_plugin_commands(argv)
    return registry.parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    handler: CliCommand = args.handler
    return handler.run(args)
