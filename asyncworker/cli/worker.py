"""``asyncworker worker``: consume and run tasks."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..logging import configure as configure_logging
from ..logging import get_logger
from ..plugins import CliCommand
from ..settings import Settings
from ..supervisor.children import process_count
from .apps import configured_app


def expand_hostname(name: str) -> str:
    """Celery's node-name placeholders: ``%h`` (host name) and ``%n`` (its first label)."""
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


class WorkerCommand(CliCommand):
    """Run a worker until a signal stops it.

    Exit status: 0 after a shutdown, 2 for a configuration error (bad option,
    setting or ``--app``), 1 when the worker stops on an error (a lifespan hook
    failing at start-up included) or on an unhandled ``KeyboardInterrupt``.
    With ``--processes N`` (N > 1) this process is the supervisor of N workers
    (:mod:`asyncworker.supervisor`): 0 after a shutdown, 2 for a configuration
    error, its own or a child's.
    """

    name = "worker"
    help = "consume and run tasks"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Celery's worker options, under its names."""
        parser.add_argument("-Q", "--queues", help="comma-separated queues to consume")
        parser.add_argument("-c", "--concurrency", type=int, help="tasks running at once")
        parser.add_argument("--prefetch-multiplier", type=int,
                            help="prefetch = concurrency x this (Celery's default 4)")
        parser.add_argument("-n", "--hostname", help="node name, e.g. worker1@%%h")
        parser.add_argument("-l", "--loglevel", help="DEBUG, INFO, WARNING, ERROR")
        parser.add_argument("-B", "--beat", action="store_true", default=None,
                            help="also run the periodic-task scheduler (development)")
        parser.add_argument("-E", "--task-events", action="store_true", default=None,
                            help="send task events (for Flower, celery events)")
        parser.add_argument("--http-port", type=int,
                            help="serve /metrics, /healthz and /readyz on this port")
        parser.add_argument("--processes", metavar="N",
                            help="run N worker processes under a supervisor ('auto': one "
                                 "per CPU; default 1: no supervisor)")

    def run(self, args: argparse.Namespace) -> int:
        """Load the app and its settings, then run the worker on the chosen event loop."""
        from ..worker import Worker

        try:
            app = configured_app(
                args,
                worker_queues=args.queues.split(",") if args.queues else None,
                worker_concurrency=args.concurrency,
                worker_prefetch_multiplier=args.prefetch_multiplier,
                worker_nodename=expand_hostname(args.hostname) if args.hostname else None,
                worker_log_level=args.loglevel,
                worker_beat=args.beat,
                worker_send_task_events=args.task_events,
                worker_http_port=args.http_port,
                worker_processes=args.processes,
            )
            settings = app.settings
            processes = process_count(settings.worker_processes)
        except (ImproperlyConfigured, ImportError) as exc:
            print(f"asyncworker: {exc}", file=sys.stderr)
            return 2
        if processes > 1:
            from ..supervisor import supervise

            return supervise(args, settings, processes)
        return run_process(lambda: Worker(app).run(), settings, "worker")


def run_process(main: Callable[[], Coroutine[Any, Any, None]], settings: Settings,
                what: str) -> int:
    """Run a long-lived process's ``main()`` on the configured event loop, logging.

    Exit status: 0 after a normal stop, 2 for a configuration error, 1 for any
    other error (logged with its traceback) or an unhandled ``KeyboardInterrupt``.
    """
    configure_logging(settings.worker_log_level, settings.worker_log_format)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.worker_event_loop)) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        return 1
    except ImproperlyConfigured as exc:
        get_logger("cli").error("configuration error", error=str(exc))
        return 2
    except Exception as exc:
        get_logger("cli").exception(f"{what} stopped on an error", error=repr(exc))
        return 1
    return 0
