"""``asyncworker dlq list|replay QUEUE``: the dead letters kept for a queue."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .. import broker as brokers
from ..deadletter import as_json, list_dead_letters, replay_dead_letters
from ..logging import configure as configure_logging
from ..plugins import CliCommand
from .apps import configured_app


class DlqCommand(CliCommand):
    """List dead letters as JSON lines, or publish them back where they came from.

    Connects with the app's settings (``broker_url``, ``task_dead_letter_suffix``).
    Exit status 0, or 1 on any error.
    """

    name = "dlq"
    help = "list or replay dead letters"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The action, the queue and how many messages."""
        parser.add_argument("action", choices=["list", "replay"])
        parser.add_argument("queue",
                            help="the queue whose dead letters to use (or the DLQ itself)")
        parser.add_argument("--limit", type=int, default=100, help="at most this many messages")

    def run(self, args: argparse.Namespace) -> int:
        """Run the action; errors are printed, not raised."""
        configure_logging("WARNING", "auto")
        try:
            return asyncio.run(self._run(args))
        except Exception as exc:
            print(f"asyncworker dlq: {exc}", file=sys.stderr)
            return 1

    async def _run(self, args: argparse.Namespace) -> int:
        s = configured_app(args).settings
        suffix = s.task_dead_letter_suffix
        name = args.queue if args.queue.endswith(suffix) else args.queue + suffix
        broker = brokers.create(s)
        await broker.connect(retry=False)
        try:
            if args.action == "list":
                letters = await list_dead_letters(broker, name, args.limit)
                if letters:
                    print(as_json(letters))
                print(f"{len(letters)} dead letter(s) in {name}", file=sys.stderr)
            else:
                count = await replay_dead_letters(broker, name, args.limit)
                print(f"{count} dead letter(s) replayed from {name}", file=sys.stderr)
        finally:
            await broker.close()
        return 0
