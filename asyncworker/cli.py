"""Command line: ``python -m asyncworker worker ...``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Sequence

from .app import App
from .exceptions import ImproperlyConfigured
from .logging import configure as configure_logging
from .logging import get_logger

DEFAULT_APP = "asyncworker.tasks:app"


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        raise ImproperlyConfigured(f"{spec!r} is not an asyncworker App")
    return app


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate for tests and docs)."""
    parser = argparse.ArgumentParser(prog="asyncworker",
                                     description="asyncio worker for Celery task queues")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="consume and run tasks")
    worker.add_argument("-A", "--app", default=DEFAULT_APP,
                        help=f"MODULE:ATTR of the App (default: {DEFAULT_APP})")
    worker.add_argument("-Q", "--queues", help="comma-separated queues to consume")
    worker.add_argument("-c", "--concurrency", type=int, help="tasks running at once")
    worker.add_argument("--prefetch-multiplier", type=int,
                        help="prefetch = concurrency x this (Celery's default 4)")
    worker.add_argument("-n", "--hostname", help="node name, e.g. worker1@%%h")
    worker.add_argument("-l", "--loglevel", help="DEBUG, INFO, WARNING, ERROR")
    worker.add_argument("--config", help="TOML settings file")

    dlq = sub.add_parser("dlq", help="list or replay dead letters")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("queue", help="the queue whose dead letters to use (or the DLQ itself)")
    dlq.add_argument("--limit", type=int, default=100, help="at most this many messages")
    dlq.add_argument("--config", help="TOML settings file")
    return parser


async def _dlq(action: str, queue: str, limit: int, config: str | None) -> int:
    from . import settings as settings_mod
    from .broker.amqp import AmqpBroker
    from .deadletter import as_json, list_dead_letters, replay_dead_letters

    s = settings_mod.load(config)
    name = queue if queue.endswith(s.task_dead_letter_suffix) else (
        queue + s.task_dead_letter_suffix)
    broker = AmqpBroker(s.broker_url, s.broker_heartbeat, s.broker_connection_timeout)
    await broker.connect(retry=False)
    try:
        if action == "list":
            letters = await list_dead_letters(broker, name, limit)
            if letters:
                print(as_json(letters))
            print(f"{len(letters)} dead letter(s) in {name}", file=sys.stderr)
        else:
            count = await replay_dead_letters(broker, name, limit)
            print(f"{count} dead letter(s) replayed from {name}", file=sys.stderr)
    finally:
        await broker.close()
    return 0


def _expand_hostname(name: str) -> str:
    import socket

    host = socket.gethostname()
    return name.replace("%h", host).replace("%n", host.split(".")[0])


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``worker_event_loop``: ``asyncio`` or ``uvloop`` (if installed)."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ImproperlyConfigured(
                "worker_event_loop = 'uvloop' needs the uvloop package "
                "(pip install 'asyncworker[uvloop]')") from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ImproperlyConfigured(f"worker_event_loop must be 'asyncio' or 'uvloop', not {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from .worker import Worker

        try:
            app = load_app(args.app)
            app.configure(
                config_file=args.config,
                worker_queues=args.queues.split(",") if args.queues else None,
                worker_concurrency=args.concurrency,
                worker_prefetch_multiplier=args.prefetch_multiplier,
                worker_nodename=_expand_hostname(args.hostname) if args.hostname else None,
                worker_log_level=args.loglevel,
            )
            settings = app.settings
        except (ImproperlyConfigured, ImportError) as exc:
            print(f"asyncworker: {exc}", file=sys.stderr)
            return 2
        configure_logging(settings.worker_log_level, settings.worker_log_format)
        try:
            with asyncio.Runner(loop_factory=loop_factory(settings.worker_event_loop)) as runner:
                runner.run(Worker(app).run())
        except KeyboardInterrupt:
            return 1
        except ImproperlyConfigured as exc:
            get_logger("cli").error("configuration error", error=str(exc))
            return 2
        except Exception as exc:
            get_logger("cli").exception("worker stopped on an error", error=repr(exc))
            return 1
        return 0
    if args.command == "dlq":
        configure_logging("WARNING", "auto")
        try:
            return asyncio.run(_dlq(args.action, args.queue, args.limit, args.config))
        except Exception as exc:
            print(f"asyncworker dlq: {exc}", file=sys.stderr)
            return 1
    return 2
