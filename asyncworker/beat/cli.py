"""``asyncworker beat``: run the scheduler, preview it, or edit run-time entries.

- ``beat``: run a scheduler replica until SIGINT/SIGTERM.
- ``beat --show [--count N] [--now ISO8601]``: publish nothing; print each
  settings entry's next fire times as JSON lines.
- ``beat entries list|add|remove|pause|resume``: the entries table
  (PostgreSQL); running schedulers pick changes up within ``beat_sync_every``
  seconds. Entries from the settings are read-only here.

Exit status: 0 on success, 1 when an entries command finds nothing to act on
or the scheduler stops on an error, 2 for a configuration error (a bad entry
included, named in the message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..plugins import CliCommand
from .entries import Entry, load
from .scheduler import Beat, upcoming, utcnow
from .settings import BeatSettings
from .store import MemoryStore, store_url
from .store import create as create_store


class BeatCommand(CliCommand):
    """The ``beat`` subcommand."""

    name = "beat"
    help = "run the periodic-task scheduler (Celery's beat_schedule)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--show`` and its options, ``-l``, and the ``entries`` actions."""
        parser.add_argument("--show", action="store_true",
                            help="print the next fire times of each entry and exit")
        parser.add_argument("--count", type=int, default=5, help="fire times per entry (--show)")
        parser.add_argument("--now", help="ISO 8601 time to count from (--show; default now)")
        parser.add_argument("-l", "--loglevel", help="DEBUG, INFO, WARNING, ERROR")
        parser.add_argument("--http-port", type=int,
                            help="serve /metrics, /healthz and /readyz on this port")
        actions = parser.add_subparsers(dest="beat_command", metavar="entries")
        entries = actions.add_parser("entries", help="edit the run-time entries table")
        verbs = entries.add_subparsers(dest="verb", required=True, metavar="ACTION")
        verbs.add_parser("list", help="print every entry as a JSON line")
        add = verbs.add_parser("add", help="add an entry (--replace to overwrite one)")
        add.add_argument("entry")
        add.add_argument("task")
        when = add.add_mutually_exclusive_group(required=True)
        when.add_argument("--every", type=float, help="interval in seconds")
        when.add_argument("--crontab", help='"minute hour day_of_month month_of_year '
                                            'day_of_week", Celery semantics')
        when.add_argument("--schedule", help="a schedule as JSON, e.g. "
                                             '\'{"crontab": {"minute": "*/5"}}\'')
        add.add_argument("--args", default="[]", help="JSON list")
        add.add_argument("--kwargs", default="{}", help="JSON object")
        add.add_argument("--options", default="{}", help="JSON object (queue, priority, ...)")
        add.add_argument("--replace", action="store_true", help="overwrite an existing entry")
        for verb, text in (("remove", "delete an entry"), ("pause", "stop firing an entry"),
                           ("resume", "fire a paused entry again (from now on)")):
            verbs.add_parser(verb, help=text).add_argument("entry")

    def run(self, args: argparse.Namespace) -> int:
        """Dispatch to the scheduler, ``--show`` or an entries action."""
        from ..cli.apps import configured_app

        try:
            app = configured_app(args, worker_log_level=args.loglevel,
                                 worker_http_port=args.http_port)
            settings = app.settings
            beat = settings.section(BeatSettings)
            if args.beat_command == "entries":
                return asyncio.run(_entries(app, args))
            entries = load(beat.beat_schedule, app)
            if args.show:
                return _show(entries, beat, args.count, args.now)
        except (ImproperlyConfigured, ImportError) as exc:
            print(f"asyncworker: {exc}", file=sys.stderr)
            return 2
        from ..cli.worker import run_process

        return run_process(lambda: _run(app), settings, "beat")


async def _run(app: Any) -> None:
    beat = Beat(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, beat.stop)
    from ..monitoring.service import beat_monitoring

    try:
        async with beat_monitoring(app, beat):
            await beat.run()
    finally:
        await app.close()


def _show(entries: dict[str, Entry], beat: BeatSettings, count: int, now_text: str | None) -> int:
    tz = beat.tz()
    if now_text:
        try:
            now = datetime.fromisoformat(now_text)
        except ValueError:
            raise ImproperlyConfigured(f"--now is not an ISO 8601 time: {now_text!r}") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=tz)  # a time without offset is in the configured zone
    else:
        now = utcnow()
    now = now.astimezone(UTC)  # intervals count real time, not the wall clock
    for name, entry in entries.items():
        times = upcoming(entry, tz, now, count)
        print(json.dumps({"entry": name, "task": entry.task,
                          "next": [t.astimezone(tz).isoformat() for t in times]}))
    return 0


async def _entries(app: Any, args: argparse.Namespace) -> int:
    beat = app.settings.section(BeatSettings)
    static = load(beat.beat_schedule, app)
    name: str = getattr(args, "entry", "")
    if name in static:
        raise ImproperlyConfigured(
            f"entry {name!r} comes from the settings and is read-only here")
    store = create_store(app.settings)
    if not store.supports_entries or (isinstance(store, MemoryStore)
                                      and store_url(app.settings) is None):
        # A process-local table would vanish with this command.
        raise ImproperlyConfigured(store.no_entries_reason())
    await store.setup()
    try:
        if args.verb == "list":
            for entry in static.values():
                print(json.dumps(entry.describe()))
            for row in await store.load_entries():
                data = {"entry": row.name, **row.config, "source": "database",
                        "enabled": row.enabled}
                print(json.dumps(data))
            return 0
        if args.verb == "add":
            config = {"task": args.task, "schedule": _schedule_arg(args),
                      "args": _json(args.args, "--args", list),
                      "kwargs": _json(args.kwargs, "--kwargs", dict),
                      "options": _json(args.options, "--options", dict)}
            entry = Entry.from_config(name, config, app, "database")  # refuse before saving
            config["schedule"] = entry.schedule.describe()
            if not await store.save_entry(name, config, replace=args.replace):
                return _fail(f"entry {name!r} exists (use --replace)")
            if args.replace:
                await store.forget(name)  # a changed schedule starts afresh
        elif args.verb == "remove":
            if not await store.remove_entry(name):
                return _fail(f"no entry {name!r} in the table")
            await store.forget(name)
        else:
            if args.verb == "resume":
                await store.forget(name)  # no catch-up for the paused time
            if not await store.set_enabled(name, args.verb == "resume"):
                return _fail(f"no entry {name!r} in the table")
        print(json.dumps({"entry": name, "done": args.verb}))
        return 0
    finally:
        await store.close()


def _schedule_arg(args: argparse.Namespace) -> Any:
    if args.every is not None:
        return args.every
    if args.crontab is not None:
        return {"crontab": args.crontab}
    return _json(args.schedule, "--schedule", (dict, int, float))


def _json(text: str, what: str, kind: type | tuple[type, ...]) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        raise ImproperlyConfigured(f"{what} is not JSON: {text!r}") from None
    if not isinstance(value, kind):
        raise ImproperlyConfigured(f"{what} has the wrong type: {text!r}")
    return value


def _fail(message: str) -> int:
    print(f"asyncworker: {message}", file=sys.stderr)
    return 1
