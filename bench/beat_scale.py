"""Beat at scale: N crontab entries due in the same minute, fired by R replicas.

    .venv/bin/python bench/beat_scale.py                         # 10,000 entries, 1 replica
    .venv/bin/python bench/beat_scale.py --replicas 3 --idle 30  # three replicas share them

The target: "10,000 crontab entries that are all due at the same minute are
all published within 2 s of it, and an idle scheduler uses almost no CPU."

One run:

1. writes a temporary TOML config with N entries, each a crontab due at the
   first minute that leaves ``--lead`` seconds to start up (and, with
   ``--fires K``, at the K-1 minutes after it), all sent to the queue
   ``bench_beat``; entry names carry a run id, so claims and history left by
   earlier runs cannot interfere;
2. starts R ``python -m asyncworker beat --config ...`` processes (JSON logs,
   one file each) and waits for the minute;
3. reads every ``"beat fired"`` line: each tick must fire exactly once across
   the replicas (N x K distinct task ids, no duplicate, each for its entry and
   minute), the queue must hold exactly those messages (drained and checked
   by task id), and the claims table as many sent ticks;
4. reports, per fire, the logged ``lag`` (scheduled time → publish confirmed
   and marked sent) p50/p99/max, when the last ``beat fired`` line was logged,
   and the CPU seconds each replica used from 1 s before the minute until
   every tick was logged (plus 2 s); then the CPU used over ``--idle`` seconds
   with nothing due (as % of one core), RSS and start-up time;
5. stops the replicas, deletes this run's rows from ``asyncworker_beat_ticks``
   and ``asyncworker_beat_history`` and deletes the queue.

The first fire comes right after start-up: its replicas open their broker
connection and declare the queue while firing. The second (``--fires 2``,
the default) shows the steady state, a minute later.

Ticks are claimed in the bench's own database (``beat_store``, database
``asyncworker_bench``), not the result backend's: the replicas also load every
run-time entry of the store's ``asyncworker_beat_entries`` table, so sharing it
with anything else (a test suite adding entries) would make them fire, and
claim, each other's ticks. Fires of entries that are not this run's are left
out of the figures and counted in the notes.

Results go to ``bench/results/beat.json`` and ``beat.md``: one row per
(entries, replicas, event loop), a new run replacing the row of the same shape.
``BENCH_BROKER_URL``, ``BENCH_BEAT_BACKEND`` and ``BENCH_BEAT_STORE`` point the
bench elsewhere. ``--profile`` records each replica with py-spy while it fires.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: bench/ helpers are imported as a package
from bench.measure import machine, percentile  # noqa: E402

BROKER = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get(
    "BENCH_BEAT_BACKEND", "db+postgresql://asyncworker:asyncworker@127.0.0.1:5432/asyncworker")
STORE = os.environ.get(
    "BENCH_BEAT_STORE", "postgresql://asyncworker:asyncworker@127.0.0.1:5432/asyncworker_bench")
QUEUE = "bench_beat"
TASK = "bench.beat_tick"
TARGET_S = 2.0
SETTLE_S = 2.0  # after the last expected tick: time for a duplicate to show up
DEFAULT_LEAD = 45.0


# -- one replica ----------------------------------------------------------------------


class LogTail:
    """The JSON lines a replica has written so far, read incrementally."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self.offset = 0
        self.partial = b""
        self.fired: list[dict[str, Any]] = []
        self.by_time: dict[datetime, list[dict[str, Any]]] = {}
        self.foreign = 0  # fires of entries that are not this run's
        self.started: dict[str, Any] | None = None
        self.problems: list[dict[str, Any]] = []  # warnings and errors
        self.other = 0  # lines that are not JSON (tracebacks, prints)

    def poll(self) -> None:
        """Parse the lines written since the last call."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                self.other += 1
                continue
            event = record.get("event")
            if event == "beat fired" and "scheduled" in record:
                if str(record.get("entry", "")).startswith(self.prefix):
                    self.fired.append(record)
                    at = _parse_time(record["scheduled"])
                    self.by_time.setdefault(at, []).append(record)
                else:
                    self.foreign += 1
            elif event == "beat started":
                self.started = record
            elif record.get("level") in ("warning", "error", "critical"):
                self.problems.append(record)

    def fired_at(self, scheduled: datetime) -> list[dict[str, Any]]:
        """This run's ``beat fired`` records of the tick at ``scheduled``."""
        return self.by_time.get(scheduled, [])


class Replica:
    """A ``beat`` subprocess, its log and its resource readings."""

    def __init__(self, index: int, config: Path, log_path: Path, prefix: str) -> None:
        self.index = index
        self.log_path = log_path
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ASYNCWORKER_CONFIG", None)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "asyncworker", "beat", "--config", str(config)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.spawned = time.time()
        self.ps = psutil.Process(self.process.pid)
        self.tail = LogTail(log_path, prefix)
        self.peak_rss = 0
        self.cpu_marks: dict[str, float] = {}
        self.rss_marks: dict[str, int] = {}

    def mark(self, name: str) -> None:
        """Remember CPU seconds and RSS now, under ``name``."""
        with contextlib.suppress(psutil.Error):
            times = self.ps.cpu_times()
            self.cpu_marks[name] = times.user + times.system
            self.rss_marks[name] = self.ps.memory_info().rss

    def cpu_between(self, start: str, end: str) -> float | None:
        if start in self.cpu_marks and end in self.cpu_marks:
            return round(self.cpu_marks[end] - self.cpu_marks[start], 3)
        return None

    def sample_rss(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.tail.poll()
        return self.process.returncode


class RssSampler:
    """Peak RSS of every replica, sampled every 100 ms in a thread."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for r in self.replicas:
                r.sample_rss()


# -- figures ------------------------------------------------------------------------------


@dataclass
class ReplicaFire:
    """One replica's share of one fire."""

    index: int
    fired: int = 0
    batches: int = 0  # distinct lag values: one per claim + publish + mark-sent round
    lag_max_s: float | None = None
    cpu_s: float | None = None


@dataclass
class Fire:
    """One minute's ticks, across the replicas."""

    scheduled: str
    fired: int = 0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    first_logged_s: float | None = None
    last_logged_s: float | None = None
    within_target: bool = False
    cpu_s: float = 0.0  # summed over the replicas
    host_busy_cores: float | None = None  # the whole machine: beat, RabbitMQ, PostgreSQL, ...
    replica: list[ReplicaFire] = field(default_factory=list)


@dataclass
class ReplicaResult:
    """One replica's start-up, idle CPU and memory."""

    index: int
    fired: int = 0
    startup_s: float | None = None
    startup_cpu_s: float | None = None
    idle_cpu_s: float | None = None
    idle_cpu_pct: float | None = None
    rss_ready_mb: float | None = None
    rss_idle_mb: float | None = None
    peak_rss_mb: float = 0.0
    problems: list[str] = field(default_factory=list)
    exit_status: int | None = None


@dataclass
class Result:
    """Figures of one run."""

    entries: int
    replicas: int
    fires: int
    loop: str = "asyncio"  # worker_event_loop
    run_id: str = ""
    lead_s: float = 0.0
    fired_lines: int = 0
    distinct_task_ids: int = 0
    duplicates: int = 0
    missing: int = 0
    wrong_time: int = 0
    queue_messages: int | None = None
    queue_distinct_ids: int | None = None
    queue_unexpected: int | None = None
    db_ticks: int | None = None
    db_sent: int | None = None
    exactly_once: bool = False
    within_target: bool = False  # every fire
    idle_s: float = 0.0
    idle_cpu_pct_max: float | None = None
    host_busy_idle: float | None = None
    fire: list[Fire] = field(default_factory=list)
    replica: list[ReplicaResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def host_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, now)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle, time.monotonic()


def busy_cores(start: tuple[float, float], end: tuple[float, float]) -> float:
    return round((end[0] - start[0]) / max(end[1] - start[1], 1e-9), 2)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


# -- set-up and clean-up ------------------------------------------------------------------


def due_minute(now: datetime, lead: float) -> datetime:
    """The first whole minute at least ``lead`` seconds after ``now``."""
    due = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while (due - now).total_seconds() < lead:
        due += timedelta(minutes=1)
    return due


def write_config(path: Path, names: list[str], minutes: list[int], loop: str) -> None:
    """The replicas' settings: JSON logs, the claim store, N crontab entries on one queue."""
    minute = ",".join(str(m) for m in minutes)
    lines = [
        f'broker_url = "{BROKER}"',
        f'result_backend = "{BACKEND}"',
        f'beat_store = "{STORE}"',
        'worker_log_format = "json"',
        f'worker_event_loop = "{loop}"',
        "",
    ]
    for name in names:
        lines += [
            f"[beat_schedule.{name}]",
            f'task = "{TASK}"',
            f'schedule = {{ crontab = {{ minute = "{minute}" }} }}',
            f'options = {{ queue = "{QUEUE}" }}',
            "",
        ]
    path.write_text("\n".join(lines))


def _dsn() -> str:
    return STORE.removeprefix("db+")


def db_ticks(prefix: str) -> tuple[int, int]:
    """This run's claimed ticks and how many of them are marked sent."""
    with psycopg2.connect(_dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(sent_at) FROM asyncworker_beat_ticks "
                    "WHERE starts_with(entry, %s)", (prefix,))
        total, sent = cur.fetchone()  # type: ignore[misc]
    return int(total), int(sent)


def db_cleanup(prefix: str) -> int:
    """Delete this run's claims and history; returns the rows deleted."""
    deleted = 0
    with psycopg2.connect(_dsn()) as conn, conn.cursor() as cur:
        for table in ("asyncworker_beat_ticks", "asyncworker_beat_history"):
            cur.execute("SELECT to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:  # type: ignore[index]
                continue
            cur.execute(f"DELETE FROM {table} WHERE starts_with(entry, %s)", (prefix,))
            deleted += cur.rowcount
    return deleted


async def _queue_reset() -> None:
    """Start from no queue: the first replica to publish declares it, as it would in use."""
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)


async def _queue_drain(timeout: float = 60.0) -> tuple[int, list[str]]:
    """The queue's message count, then every message's task id (consumed, no ack)."""
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(QUEUE, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0, []
        count = queue.declaration_result.message_count or 0
        ids: list[str] = []
        done = asyncio.Event()
        await channel.set_qos(prefetch_count=1000)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            ids.append(str((message.headers or {}).get("id")))
            if len(ids) >= count:
                done.set()

        tag = await queue.consume(on_message, no_ack=True)
        if count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
        await queue.cancel(tag)
        return count, ids


async def _queue_delete() -> None:
    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
            await channel.exchange_delete(QUEUE)


def _progress(text: str) -> None:
    print(f"[beat] {text}", file=sys.stderr, flush=True)


# -- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace, log_dir: Path) -> Result:
    """One measured run (see the module docstring)."""
    from asyncworker.beat.entries import tick_id

    result = Result(args.entries, args.replicas, args.fires, args.loop)
    run_id = result.run_id = datetime.now(UTC).strftime("%m%d%H%M") + secrets.token_hex(2)
    prefix = f"bench_beat_{run_id}_"
    names = [f"{prefix}{i:05d}" for i in range(args.entries)]
    now = datetime.now(UTC)
    first = due_minute(now, args.lead)
    dues = [first + timedelta(minutes=k) for k in range(args.fires)]
    result.lead_s = round((first - now).total_seconds(), 1)
    expected = {tick_id(name, due): name for due in dues for name in names}
    config = log_dir / "beat.toml"
    write_config(config, names, [due.minute for due in dues], args.loop)
    asyncio.run(_queue_reset())
    _progress(f"{args.entries} entries due at " + ", ".join(f"{d:%H:%M}" for d in dues)
              + f" UTC (first in {result.lead_s:.0f} s), {args.replicas} replica(s); "
              f"logs in {log_dir}")

    replicas: list[Replica] = []
    try:
        for i in range(args.replicas):
            replicas.append(Replica(i, config, log_dir / f"beat-{i}.log", prefix))
        with RssSampler(replicas):
            _measure(args, result, replicas, dues, expected)
    finally:
        statuses = [r.stop() for r in replicas]
        with contextlib.suppress(Exception):
            result.db_ticks, result.db_sent = db_ticks(prefix)
        deleted = db_cleanup(prefix)
        with contextlib.suppress(Exception):
            asyncio.run(_queue_delete())
        _progress(f"cleaned up: {deleted} claim/history rows, queue {QUEUE} deleted")
    for rr, status in zip(result.replica, statuses, strict=False):
        rr.exit_status = status
        if status not in (0, None):
            result.notes.append(f"replica {rr.index} exited with status {status}")
    return result


def _measure(args: argparse.Namespace, result: Result, replicas: list[Replica],
             dues: list[datetime], expected: dict[str, str]) -> None:
    result.replica = [ReplicaResult(r.index) for r in replicas]
    _startup(args, result, replicas, dues[0])
    for k, due in enumerate(dues):
        result.fire.append(_fire(args, result, replicas, due, k))

    # Idle: nothing due until the next hour.
    for r in replicas:
        r.mark("idle_start")
    host_idle = host_busy()
    time.sleep(args.idle)
    for r in replicas:
        r.tail.poll()
        r.mark("idle_end")
    if args.idle > 0:
        result.host_busy_idle = busy_cores(host_idle, host_busy())
        if result.host_busy_idle > 0.3:
            result.notes.append(
                f"the machine was {result.host_busy_idle:g} cores busy while the replicas "
                "idled: other load shared the CPU, so the firing figures are contended")
    for r, rr in zip(replicas, result.replica, strict=True):
        rr.fired = len(r.tail.fired)
        if args.idle > 0 and (idle := r.cpu_between("idle_start", "idle_end")) is not None:
            rr.idle_cpu_s = idle
            rr.idle_cpu_pct = round(idle / args.idle * 100, 3)
        rr.rss_idle_mb = _mb(r.rss_marks.get("idle_end"))
        rr.peak_rss_mb = _mb(r.peak_rss) or 0.0
        counts = collections.Counter(f"{p.get('level')}: {p.get('event')}"
                                     for p in r.tail.problems)
        rr.problems = [f"{n} × {what}" for what, n in counts.items()]
        if r.tail.other:
            rr.problems.append(f"{r.tail.other} non-JSON log lines")
        if r.tail.foreign:
            rr.problems.append(f"{r.tail.foreign} fires of entries from the store's entries "
                               "table (not this run's; left out)")
    pcts = [rr.idle_cpu_pct for rr in result.replica if rr.idle_cpu_pct is not None]
    result.idle_cpu_pct_max = max(pcts) if pcts else None
    result.idle_s = args.idle

    _check(result, replicas, dues, expected)


def _startup(args: argparse.Namespace, result: Result, replicas: list[Replica],
             due: datetime) -> None:
    """Until each replica logged ``beat started`` (it is then ready to fire)."""
    deadline = due.timestamp() + args.wait
    while time.time() < deadline:
        for r in replicas:
            r.tail.poll()
        if all(r.tail.started or r.process.poll() is not None for r in replicas):
            break
        time.sleep(0.1)
    for r, rr in zip(replicas, result.replica, strict=True):
        r.mark("ready")
        if r.tail.started:
            started = _parse_time(r.tail.started["timestamp"]).timestamp()
            rr.startup_s = round(started - r.spawned, 2)
            rr.startup_cpu_s = round(r.cpu_marks.get("ready", 0.0), 2)
            rr.rss_ready_mb = _mb(r.rss_marks.get("ready"))
            if started > due.timestamp():
                late = started - due.timestamp()
                result.notes.append(f"replica {r.index} was ready only {late:.1f} s after the "
                                    "minute: raise --lead")
        else:
            result.notes.append(f"replica {r.index} never logged 'beat started' "
                                f"(exit {r.process.poll()}); see {r.log_path}")
    _progress("ready: " + ", ".join(f"#{rr.index} {rr.startup_s} s" for rr in result.replica))


def _fire(args: argparse.Namespace, result: Result, replicas: list[Replica], due: datetime,
          k: int) -> Fire:
    """From 1 s before ``due`` until every tick of it is logged (or ``--wait`` runs out)."""
    time.sleep(max(0.0, due.timestamp() - 1.0 - time.time()))
    for r in replicas:
        r.mark(f"fire{k}_start")
    host = host_busy()
    spies = _profile(replicas, result, k) if args.profile else []
    deadline = due.timestamp() + args.wait
    while time.time() < deadline:
        time.sleep(0.25)
        for r in replicas:
            r.tail.poll()
        if sum(len(r.tail.fired_at(due)) for r in replicas) >= args.entries:
            break
        if all(r.process.poll() is not None for r in replicas):
            break
    time.sleep(SETTLE_S)
    for r in replicas:
        r.tail.poll()
        r.mark(f"fire{k}_end")
    fire = Fire(due.isoformat(), host_busy_cores=busy_cores(host, host_busy()))
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for spy in spies:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()

    records = []
    for r in replicas:
        own = r.tail.fired_at(due)
        records += own
        lags = [float(rec["lag"]) for rec in own]
        fire.replica.append(ReplicaFire(
            r.index, len(own), len(set(lags)), max(lags) if lags else None,
            r.cpu_between(f"fire{k}_start", f"fire{k}_end")))
    fire.fired = len(records)
    fire.cpu_s = round(sum(x.cpu_s or 0.0 for x in fire.replica), 3)
    lags = sorted(float(rec["lag"]) for rec in records)
    if lags:
        fire.lag_p50_s = round(percentile(lags, 50), 3)
        fire.lag_p99_s = round(percentile(lags, 99), 3)
        fire.lag_max_s = round(lags[-1], 3)
        logged = sorted(_parse_time(rec["timestamp"]).timestamp() - due.timestamp()
                        for rec in records)
        fire.first_logged_s = round(logged[0], 3)
        fire.last_logged_s = round(logged[-1], 3)
    fire.within_target = (fire.fired >= args.entries and fire.lag_max_s is not None
                          and fire.lag_max_s <= TARGET_S)
    _progress(f"fire {k + 1} ({due:%H:%M}): {fire.fired} ticks logged, lag max "
              f"{fire.lag_max_s} s")
    return fire


def _profile(replicas: list[Replica], result: Result, k: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on every replica for one firing window: a flame graph each, idle included."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        if k == 0:
            result.notes.append("--profile: py-spy not found")
        return []
    spies = []
    for r in replicas:
        out = r.log_path.with_name(f"fire{k + 1}-{r.index}.svg")
        spies.append(subprocess.Popen(
            [spy, "record", "--pid", str(r.process.pid), "--idle", "--nonblocking",
             "--rate", "100", "--format", "flamegraph", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if k == 0:
        result.notes.append("profiled with py-spy (--profile): the firing figures include "
                            "its overhead; flame graphs fireK-N.svg beside the logs")
    return spies


def _check(result: Result, replicas: list[Replica], dues: list[datetime],
           expected: dict[str, str]) -> None:
    """Exactly once: in the logs, in the queue and in the claims table."""
    fired = [rec for r in replicas for rec in r.tail.fired]
    ids = [rec["task_id"] for rec in fired]
    result.fired_lines = len(fired)
    result.distinct_task_ids = len(set(ids))
    result.duplicates = len(ids) - len(set(ids))
    result.missing = len(expected.keys() - set(ids))
    result.wrong_time = sum(1 for rec in fired if _parse_time(rec["scheduled"]) not in dues
                            or expected.get(rec["task_id"]) != rec["entry"])
    count, queued = asyncio.run(_queue_drain())
    result.queue_messages = count
    result.queue_distinct_ids = len(set(queued))
    result.queue_unexpected = sum(1 for i in set(queued) if i not in expected)
    if len(queued) < count:
        result.notes.append(f"only {len(queued)} of {count} queued messages could be read")
    result.exactly_once = (
        result.distinct_task_ids == len(expected) and not result.duplicates
        and not result.missing and not result.wrong_time
        and count == len(expected) == len(queued) == result.queue_distinct_ids
        and not result.queue_unexpected)
    result.within_target = all(f.within_target for f in result.fire)
    taken = sum(1 for r in replicas for p in r.tail.problems
                if p.get("event") == "beat took over a tick")
    if result.duplicates or taken:
        result.notes.append(
            f"{result.duplicates} ticks were logged twice and {taken} were taken over: a "
            "replica publishes a tick another one claimed once that claim is older than "
            "beat_claim_timeout and still unsent, live claimer or not")


# -- output -------------------------------------------------------------------------------


def revision() -> str:
    """The commit measured, ``+dirty`` when asyncworker/ has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "asyncworker") else "")


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _loop(run: dict[str, Any]) -> str:
    return str(run.get("loop", "asyncio"))


def _shape(run: dict[str, Any]) -> tuple[int, int, str]:
    """What a run measured: a new run replaces the stored one of the same shape."""
    return run["entries"], run["replicas"], _loop(run)


def _each(values: list[Any], digits: int = 0) -> str:
    return "/".join(_fmt(v, digits) for v in values)


def markdown(data: dict[str, Any]) -> str:
    """The report: a firing table, a run table, then each run's notes."""
    m = data["machine"]
    runs = data["runs"]
    lines = [
        "Beat at scale: N crontab entries due at the same minute (`bench/beat_scale.py`).",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB; Python {m['python']}, "
        f"PostgreSQL {m['postgresql']} (fsync={m['postgresql_fsync']}); RabbitMQ and "
        "PostgreSQL on the same host.",
        "",
        f"Target: every entry published within {TARGET_S:g} s of the minute, and an idle "
        "scheduler using almost no CPU. **Lag** is what each `beat fired` log line reports: "
        "scheduled time → publish confirmed by the broker and marked sent in PostgreSQL. "
        "Fire 1 is the first after start-up; fire 2, a minute later, is the steady state. "
        "**CPU** is from 1 s before the minute until every tick was logged plus "
        f"{SETTLE_S:g} s; **machine** is the whole host's busy cores over that window "
        "(beat, RabbitMQ and PostgreSQL). Per-replica figures are separated by /.",
        "",
        "| Entries | Replicas | Loop | Fire | Lag p50 s | Lag p99 s | Lag max s "
        f"| ≤ {TARGET_S:g} s | Ticks won | Batches | CPU s | Machine cores |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        for k, f in enumerate(r["fire"], 1):
            reps = f["replica"]
            lines.append(
                f"| {r['entries']:,} | {r['replicas']} | {_loop(r)} | {k} "
                f"| {_fmt(f['lag_p50_s'], 3)} "
                f"| {_fmt(f['lag_p99_s'], 3)} | {_fmt(f['lag_max_s'], 3)} "
                f"| {_fmt(f['within_target'])} | {_each([x['fired'] for x in reps])} "
                f"| {_each([x['batches'] for x in reps])} "
                f"| {_each([x['cpu_s'] for x in reps], 2)} | {_fmt(f['host_busy_cores'], 2)} |")
    lines += [
        "",
        "**Exactly once**: N distinct task ids per fire logged across the replicas, no "
        "duplicate, each for its entry and minute, and the queue holding exactly those "
        "messages. **Idle CPU** is each replica's over the idle window after the last fire "
        "(nothing due), as % of one core.",
        "",
        "| Entries | Replicas | Loop | Exactly once | Queued | Idle window s "
        "| Idle CPU % of a core | Start-up s | Start-up CPU s | RSS ready MB | Peak RSS MB |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        reps = r["replica"]
        lines.append(
            f"| {r['entries']:,} | {r['replicas']} | {_loop(r)} | {_fmt(r['exactly_once'])} "
            f"| {_fmt(r['queue_messages'])} | {_fmt(r['idle_s'])} "
            f"| {_each([x['idle_cpu_pct'] for x in reps], 2)} "
            f"| {_each([x['startup_s'] for x in reps], 1)} "
            f"| {_each([x['startup_cpu_s'] for x in reps], 1)} "
            f"| {_each([x['rss_ready_mb'] for x in reps])} "
            f"| {_each([x['peak_rss_mb'] for x in reps])} |")
    lines.append("")
    for r in runs:
        lines += [
            f"### {r['entries']:,} entries, {r['replicas']} replica(s), {_loop(r)}",
            "",
            f"Measured {r['when']} at commit {r.get('commit', '?')} with `{r['command']}` "
            f"({r['duration_s']:.0f} s).",
            "",
            f"- {r['fired_lines']:,} `beat fired` lines, {r['distinct_task_ids']:,} distinct "
            f"task ids, {r['duplicates']} duplicates, {r['missing']} missing, "
            f"{r['wrong_time']} for the wrong entry or minute; queue "
            f"{_fmt(r['queue_messages'])} messages, {_fmt(r['queue_distinct_ids'])} distinct "
            f"ids, {_fmt(r['queue_unexpected'])} unexpected; claims table "
            f"{_fmt(r['db_ticks'])} ticks, {_fmt(r['db_sent'])} marked sent",
        ]
        for k, f in enumerate(r["fire"], 1):
            lines.append(f"- fire {k} ({f['scheduled']}): first / last `beat fired` line "
                         f"logged {_fmt(f['first_logged_s'], 3)} / "
                         f"{_fmt(f['last_logged_s'], 3)} s after the minute")
        lines.append(f"- whole machine {_fmt(r['host_busy_idle'], 2)} cores busy while the "
                     "replicas idled")
        problems = [f"replica {x['index']}: {p}" for x in r["replica"] for p in x["problems"]]
        lines += [f"- {n}" for n in [*r["notes"], *problems]]
        lines.append("")
    return "\n".join(lines)


def summary(result: Result) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{result.entries:,} entries, {result.replicas} replica(s), {result.fires} fire(s), "
        f"{result.loop}",
        f"  exactly once: {result.exactly_once} (logged {result.fired_lines}, distinct "
        f"{result.distinct_task_ids}, duplicates {result.duplicates}, missing "
        f"{result.missing}; queue {result.queue_messages} / {result.queue_distinct_ids} "
        f"distinct; claims sent {result.db_sent})",
        f"  {'fire':>4} {'lag p50':>8} {'p99':>7} {'max':>7} {'≤2 s':>5} {'won':>16} "
        f"{'CPU s':>16} {'machine':>7}",
    ]
    for k, f in enumerate(result.fire, 1):
        won = "/".join(str(x.fired) for x in f.replica)
        cpu = "/".join(_fmt(x.cpu_s, 2) for x in f.replica)
        lines.append(f"  {k:>4} {_fmt(f.lag_p50_s, 3):>8} {_fmt(f.lag_p99_s, 3):>7} "
                     f"{_fmt(f.lag_max_s, 3):>7} {'yes' if f.within_target else 'no':>5} "
                     f"{won:>16} {cpu:>16} {_fmt(f.host_busy_cores, 2):>7}")
    lines.append(f"  {'#':>4} {'idle CPU %':>10} {'start-up s':>10} {'RSS ready MB':>12} "
                 f"{'peak RSS MB':>11}")
    for rr in result.replica:
        lines.append(f"  {rr.index:>4} {_fmt(rr.idle_cpu_pct, 3):>10} "
                     f"{_fmt(rr.startup_s, 1):>10} {_fmt(rr.rss_ready_mb):>12} "
                     f"{_fmt(rr.peak_rss_mb):>11}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(prog="bench/beat_scale.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds of idle CPU measurement after the last fire")
    parser.add_argument("--fires", type=int, default=2,
                        help="consecutive minutes every entry is due at (default 2: the "
                             "first fire after start-up, then the steady state)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the replicas' worker_event_loop")
    parser.add_argument("--lead", type=float, default=DEFAULT_LEAD,
                        help="least seconds between writing the config and the first fire")
    parser.add_argument("--wait", type=float, default=50.0,
                        help="seconds after each minute to wait for its ticks")
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the config and the replicas' logs in this folder "
                             "(default: a temporary folder, deleted)")
    parser.add_argument("--profile", action="store_true",
                        help="record each replica with py-spy while it fires (flame graphs "
                             "fireK-N.svg in the --logs folder)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/results)")
    parser.add_argument("--name", default="beat", help="file stem (default: beat)")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.replicas < 1 or args.idle < 0:
        parser.error("--entries and --replicas must be at least 1, --idle not negative")
    if not 1 <= args.fires <= 30 or not 0 < args.wait <= 55:
        parser.error("--fires must be 1 to 30 and --wait at most 55 s (fires are a minute "
                     "apart)")
    if args.profile and not args.logs:
        parser.error("--profile writes its flame graphs beside the logs: give --logs DIR")
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command the report names: every option that changes what is measured."""
    parts = ["python bench/beat_scale.py", f"--entries {args.entries}",
             f"--replicas {args.replicas}", f"--idle {args.idle:g}"]
    if args.fires != 2:
        parts.append(f"--fires {args.fires}")
    if args.loop != "asyncio":
        parts.append(f"--loop {args.loop}")
    if args.lead != DEFAULT_LEAD:
        parts.append(f"--lead {args.lead:g}")
    if args.profile:
        parts.append("--profile")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    args = parse_args(argv)
    out_dir = args.out or REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    commit = revision()
    with contextlib.ExitStack() as stack:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            log_dir = args.logs
        else:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="beat-")))
        result = run(args, log_dir)
    row = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
           "command": command_line(args), "duration_s": round(time.monotonic() - started, 1),
           **asdict(result)}
    json_path = out_dir / f"{args.name}.json"
    data: dict[str, Any] = {"runs": []}
    if json_path.exists():
        with contextlib.suppress(ValueError):
            data = json.loads(json_path.read_text())
    data["machine"] = machine(_dsn())
    kept = [r for r in data.get("runs", []) if "fire" in r and "commit" in r
            and _shape(r) != _shape(row)]
    data["runs"] = sorted([*kept, row], key=_shape)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / f"{args.name}.md").write_text(markdown(data))
    print(summary(result))
    return 0 if result.exactly_once and result.within_target else 1


if __name__ == "__main__":
    sys.exit(main())
