"""``worker --processes N``: restart pacing, crash loops, the children's command lines,
and the supervisor loop on small real child processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from asyncworker.backoff import BackoffPolicy
from asyncworker.cli import build_parser
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.settings import Settings, Source, resolve
from asyncworker.supervisor import (
    ChildSpec,
    RestartTracker,
    Supervisor,
    child_nodename,
    child_specs,
    process_count,
)
from asyncworker.supervisor.children import FLAGS, FORWARDED, REPLACED
from tests.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_restart_pauses_grow_to_the_cap_and_a_crash_loop_is_reported_once() -> None:
    clock = Clock()
    tracker = RestartTracker(BackoffPolicy(initial=1.0, maximum=8.0), threshold=3,
                             window=60.0, clock=clock, rng=lambda: 1.0)
    restarts = []
    for _ in range(6):
        restarts.append(tracker.died(uptime=0.5))
        clock.now += restarts[-1].delay + 0.5
    assert [r.delay for r in restarts] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [r.crash_loop for r in restarts] == [False, False, True, True, True, True]
    assert [r.crash_loop_started for r in restarts] == [False, False, True, False, False,
                                                        False]


def test_a_crash_loop_lasts_until_a_stable_run_and_pauses_never_shrink_before() -> None:
    clock = Clock()
    tracker = RestartTracker(BackoffPolicy(initial=1.0, maximum=60.0), threshold=3,
                             window=10.0, stable_after=30.0, clock=clock, rng=lambda: 0.0)
    for _ in range(3):
        tracker.died(uptime=0.1)
    clock.now += 100  # deaths far apart: the window empties, the loop does not end
    later = tracker.died(uptime=5.0)
    assert later.crash_loop and not later.crash_loop_started and later.recent_deaths == 1
    assert later.delay == 4.0  # 8 s ceiling, equal jitter at its floor
    clock.now += 100
    healthy = tracker.died(uptime=31.0)  # it had run stably: back to the short pause
    assert not healthy.crash_loop and healthy.delay == 0.5


def test_jittered_pauses_grow_until_the_cap() -> None:
    tracker = RestartTracker()
    pauses = [tracker.died(uptime=0.0).delay for _ in range(10)]
    growing = pauses[:6]  # ceilings 1, 2, 4 ... 32 s: equal jitter never goes back
    assert growing == sorted(growing) and 0.5 <= pauses[0] <= 1.0
    assert all(30.0 <= p <= 60.0 for p in pauses[6:])


@pytest.mark.parametrize(("raw", "count"), [(1, 1), (3, 3), ("2", 2), (" AUTO ", None)])
def test_process_count(raw: int | str, count: int | None) -> None:
    assert process_count(raw) == (count or os.cpu_count())


@pytest.mark.parametrize("raw", [0, -1, "many", "0"])
def test_process_count_refuses_nonsense(raw: int | str) -> None:
    with pytest.raises(ImproperlyConfigured, match="worker_processes"):
        process_count(raw)


def test_worker_processes_setting_takes_a_number_or_auto() -> None:
    assert resolve([Source("env", {"worker_processes": "4"})]).worker_processes == 4
    assert resolve([Source("toml", {"worker_processes": 2})]).worker_processes == 2
    assert resolve([Source("env", {"worker_processes": "auto"})]).worker_processes == "auto"
    assert Settings().worker_processes == 1


def test_child_node_names() -> None:
    assert child_nodename("celery@web1", 2) == "celery-2@web1"
    assert child_nodename("solo", 1) == "solo-1"


def test_child_command_lines() -> None:
    args = build_parser(["worker"]).parse_args(
        ["worker", "-A", "tests.apps.compat:app", "-Q", "a,b", "-c", "7", "-E", "-B",
         "--processes", "3", "-n", "w@h", "--http-port", "9808", "--config", "x.toml"])
    specs = child_specs(args, 3, "w@h", "/tmp/metrics")
    assert [s.nodename for s in specs] == ["w-1@h", "w-2@h", "w-3@h"]
    first = list(specs[0].argv)
    assert first[:6] == [sys.executable, "-m", "asyncworker", "worker", "--processes", "1"]
    for option, value in (("--app", "tests.apps.compat:app"), ("--queues", "a,b"),
                          ("--concurrency", "7"), ("--config", "x.toml"),
                          ("--http-port", "0"), ("--hostname", "w-1@h")):
        assert first[first.index(option) + 1] == value
    assert "--task-events" in first and "--beat" in first
    assert "--beat" not in specs[1].argv and specs[1].env["ASYNCWORKER_WORKER_BEAT"] == "false"
    assert specs[0].env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"
    assert specs[0].env["ASYNCWORKER_WORKER_HTTP_HOST"] == "127.0.0.1"
    plain = child_specs(build_parser(["worker"]).parse_args(["worker"]), 2, "w@h", None)
    assert "--http-port" not in plain[0].argv and "PROMETHEUS_MULTIPROC_DIR" not in (
        plain[0].env.keys() - os.environ.keys())


def test_every_worker_option_reaches_the_children_or_is_replaced() -> None:
    """A new ``worker`` option must be forwarded (children.FORWARDED / FLAGS) or replaced."""
    parser = build_parser(["worker"])
    sub = next(a for a in parser._actions
               if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices["worker"]._actions} - {"help"}
    handled = {d for d, _ in FORWARDED} | {d for d, _ in FLAGS} | REPLACED
    assert dests - handled == set()


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return (sys.executable, str(path))


FAST = BackoffPolicy(initial=0.05, maximum=0.2)


def test_a_child_exiting_2_stops_the_group_with_2(tmp_path: Path) -> None:
    waits = script(tmp_path, "waits", "import signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\ntime.sleep(60)\n")
    bad = script(tmp_path, "bad", "import sys\nsys.exit(2)\n")
    specs = [ChildSpec(1, "a-1@h", waits, dict(os.environ)),
             ChildSpec(2, "a-2@h", bad, dict(os.environ))]
    supervisor = Supervisor(specs, 5.0, trackers=lambda: RestartTracker(FAST))
    assert asyncio.run(asyncio.wait_for(supervisor.run(), 30)) == 2
    assert all(c.restarts == 0 for c in supervisor.children)


def test_dead_children_restart_until_a_signal_and_the_supervisor_exits_0(
        tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    dies = script(tmp_path, "dies", f"open({str(starts)!r}, 'a').write('x')\n"
                  "raise SystemExit(1)\n")
    specs = [ChildSpec(1, "b-1@h", dies, dict(os.environ))]
    supervisor = Supervisor(specs, 5.0, trackers=lambda: RestartTracker(FAST))

    async def scenario() -> int:
        run = asyncio.create_task(supervisor.run())
        await asyncio.to_thread(wait_for, lambda: starts.exists() and len(starts.read_text()) >= 4,
                                30, what="four starts")
        os.kill(os.getpid(), signal.SIGTERM)  # as an operator would
        return await asyncio.wait_for(run, 30)

    assert asyncio.run(scenario()) == 0
    child = supervisor.children[0]
    assert child.restarts >= 3 and child.tracker.looping and child.pid is None
