"""What each child of ``worker --processes N`` runs: its command line and node name.

A child is started as ``python -m asyncworker worker`` with the supervisor's
own options, so it is an ordinary worker: it reads the same App, TOML file and
environment. On top come ``--processes 1`` (the setting may say N, and the
command line wins), its node name ``-n name-i@host``, and, when the group
serves metrics, ``--http-port 0``: each child runs its monitoring service (its
own ``/metrics`` and probes on a free loopback port, logged at start) and
writes its series to the group's directory. Only the first child runs
``--beat`` (or ``worker_beat``): one scheduler per group.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from ..exceptions import ImproperlyConfigured
from ..monitoring import MULTIPROC_DIR

#: Worker options passed on unchanged: (attribute of the parsed arguments, option).
FORWARDED = (("app", "--app"), ("config", "--config"), ("queues", "--queues"),
             ("concurrency", "--concurrency"), ("prefetch_multiplier", "--prefetch-multiplier"),
             ("loglevel", "--loglevel"))
#: Flags passed on when set.
FLAGS = (("task_events", "--task-events"),)
#: Options the supervisor sets per child (or keeps for itself) instead.
REPLACED = frozenset({"processes", "hostname", "http_port", "beat"})


def process_count(value: int | str) -> int:
    """``worker_processes``: a positive number, or ``auto`` (the number of CPUs)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return os.cpu_count() or 1
        try:
            value = int(text)
        except ValueError:
            raise ImproperlyConfigured(
                f"worker_processes must be a number or 'auto', not {value!r}") from None
    if value < 1:
        raise ImproperlyConfigured(f"worker_processes must be at least 1, not {value}")
    return value


def child_nodename(nodename: str, index: int) -> str:
    """``name@host`` → ``name-<index>@host`` (``name-<index>`` without a host part)."""
    name, at, host = nodename.partition("@")
    return f"{name}-{index}{at}{host}"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child."""

    index: int
    nodename: str
    argv: tuple[str, ...]
    env: dict[str, str]


def child_specs(args: argparse.Namespace, count: int, nodename: str,
                metrics_dir: str | None) -> list[ChildSpec]:
    """The ``count`` children of a supervisor started with ``args``.

    ``metrics_dir``: the group's prometheus-client directory (None: no metrics).
    """
    common = [sys.executable, "-m", "asyncworker", "worker", "--processes", "1"]
    for attribute, option in FORWARDED:
        value = getattr(args, attribute, None)
        if value is not None:
            common += [option, str(value)]
    common += [option for attribute, option in FLAGS if getattr(args, attribute, None)]
    env = dict(os.environ)
    if metrics_dir is not None:
        common += ["--http-port", "0"]
        # Children serve their own endpoint on loopback only; the group's is the supervisor's.
        env.update({MULTIPROC_DIR: metrics_dir, "ASYNCWORKER_WORKER_HTTP_HOST": "127.0.0.1"})
    specs = []
    for index in range(1, count + 1):
        name = child_nodename(nodename, index)
        argv = [*common, "--hostname", name]
        if index == 1:
            argv += ["--beat"] if args.beat else []
            specs.append(ChildSpec(index, name, tuple(argv), env))
        else:  # worker_beat in the settings too: one scheduler is enough
            specs.append(ChildSpec(index, name, tuple(argv),
                                   {**env, "ASYNCWORKER_WORKER_BEAT": "false"}))
    return specs
