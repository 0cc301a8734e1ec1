"""``asyncworker beat`` against real RabbitMQ and PostgreSQL (and a real Celery).

Scheduler replicas run as subprocesses, as they would be deployed; what they
published is read back from the queue and from the claims table.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from asyncworker.beat import tick_id
from tests.conftest import (
    BROKER_URL,
    REDIS_URL,
    REPO,
    WorkerProcess,
    process_env,
    task_rows,
    wait_for,
)

pytestmark = pytest.mark.integration

INTERVAL = 1.0


def beat_config(path: Path, entries: dict[str, dict[str, Any]], **settings: Any) -> str:
    """A TOML file with ``entries`` as ``beat_schedule`` (JSON is valid TOML inline)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    for name, entry in entries.items():
        lines.append(f'[beat_schedule."{name}"]')
        lines.extend(f"{key} = {_toml(value)}" for key, value in entry.items())
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def fired(*beats: WorkerProcess, entry: str | None = None) -> list[dict[str, Any]]:
    """Every "beat fired" line of ``beats``, oldest publish first."""
    lines = [line for beat in beats for line in beat.events("beat fired")
             if entry is None or line["entry"] == entry]
    return sorted(lines, key=lambda line: line["timestamp"])


def at(line: dict[str, Any], key: str = "timestamp") -> datetime:
    return datetime.fromisoformat(line[key].replace("Z", "+00:00"))


async def drain(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in ``queue`` (acked), oldest first."""
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        messages = []
        while (message := await q.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()


def claimed_ticks(pg: Any, entry: str) -> list[datetime]:
    """The fire times claimed for ``entry``, in order."""
    with pg.cursor() as cur:
        cur.execute("SELECT fire_time FROM asyncworker_beat_ticks WHERE entry = %s "
                    "ORDER BY fire_time", (entry,))
        return [row[0] for row in cur.fetchall()]


def logged_ticks(lines: list[dict[str, Any]], extra: int = 5) -> list[datetime]:
    """The scheduled times in "beat fired" lines, and the grid points just around them
    (a replica killed after a publish never logged it)."""
    times = sorted({at(line, "scheduled") for line in lines})
    step = timedelta(seconds=INTERVAL)
    return [times[0] - k * step for k in range(1, extra)] + times + [
        times[-1] + k * step for k in range(1, extra)]


def assert_exactly_once(ids: list[str], pg: Any, entry: str,
                        candidates: list[datetime] | None = None) -> list[datetime]:
    """Each published id once, and the published ticks a gap-free grid; returns it.

    Ids are matched to the claims in PostgreSQL, or to ``candidates``.
    """
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"ticks published twice: {duplicates}"
    if candidates is None:
        candidates = claimed_ticks(pg, entry)
    by_id = {tick_id(entry, t): t for t in candidates}
    assert set(ids) <= by_id.keys(), "a message that no claim accounts for"
    times = sorted(by_id[i] for i in ids)
    assert times, "nothing was published"
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps <= {timedelta(seconds=INTERVAL)}, f"ticks missing: gaps {sorted(gaps)}"
    return times


@pytest.fixture
def entry_name() -> str:
    return f"beat-test-{uuid.uuid4().hex[:8]}"


def run_interval_entry(start_worker: Callable[..., WorkerProcess], pg: Any, config: str,
                       entry: str, task: str) -> None:
    """Run one beat for ten 1 s ticks: the count matches the time it ran (±1), each
    tick published once, and every tick's task stored SUCCESS by the worker."""
    beat = start_worker("--config", config, command="beat")
    started = at(beat.events("beat started")[0])
    wait_for(lambda: len(fired(beat)) >= 10, 30, what="ten ticks")
    beat.stop()
    stopped = time.time()
    lines = fired(beat)
    expected = (stopped - started.timestamp()) // INTERVAL
    assert abs(len(lines) - expected) <= 1, (len(lines), expected)
    ids = [line["task_id"] for line in lines]
    assert_exactly_once(ids, pg, entry)
    rows = wait_for(lambda: (r := task_rows(pg, ids)) and len(r) == len(ids) and r, 60,
                    what="every tick's result")
    assert {row["status"] for row in rows.values()} == {"SUCCESS"}
    assert {row["name"] for row in rows.values()} == {task}


def test_interval_ticks_run_on_an_asyncworker_worker(start_worker: Callable[..., WorkerProcess],
                                                     queue_name: str, entry_name: str,
                                                     tmp_path: Path, pg: Any) -> None:
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "args": ["tick"],
        "kwargs": {"source": "beat"}, "options": {"queue": queue_name}}})
    start_worker("-Q", queue_name)
    run_interval_entry(start_worker, pg, config, entry_name, "compat.echo")


def test_interval_ticks_run_on_a_real_celery_worker(start_worker: Callable[..., WorkerProcess],
                                                    celery_worker: str, entry_name: str,
                                                    tmp_path: Path, pg: Any) -> None:
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "celery_side.describe", "schedule": INTERVAL, "args": [1, 2],
        "kwargs": {"k": "v"}, "options": {"queue": celery_worker}}})
    run_interval_entry(start_worker, pg, config, entry_name, "celery_side.describe")


@pytest.mark.parametrize(("replicas", "store"), [(2, "postgresql"), (3, "postgresql"),
                                                 (3, "redis")])
def test_replicas_fire_each_tick_once_through_a_sigkill(
        start_worker: Callable[..., WorkerProcess], queue_name: str, entry_name: str,
        tmp_path: Path, pg: Any, replicas: int, store: str) -> None:
    claims = {"beat_store": REDIS_URL} if store == "redis" else {}
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "options": {"queue": queue_name}}},
        beat_claim_timeout=2.0, **claims)
    beats = [start_worker("--config", config, command="beat") for _ in range(replicas)]
    wait_for(lambda: len(fired(*beats)) >= 10, 30, what="ten ticks")
    # Kill the replica that published last, as a crash would.
    last = fired(*beats)[-1]
    victim = next(b for b in beats if last in b.events("beat fired"))
    victim.signal(signal.SIGKILL)
    victim.wait_exit(10)
    killed_at = datetime.now(UTC)
    survivors = [b for b in beats if b is not victim]
    wait_for(lambda: len([x for x in fired(*survivors) if at(x) > killed_at]) >= 10, 30,
             what="ten ticks after the kill")
    for beat in survivors:
        beat.stop()

    messages = asyncio.run(drain(queue_name))
    ids = [m.headers["id"] for m in messages]
    assert len(ids) == len(fired(*beats))
    assert beats[0].events("beat started")[0]["store"].startswith(store)
    times = assert_exactly_once([str(i) for i in ids], pg, entry_name,
                                logged_ticks(fired(*beats)) if store == "redis" else None)
    assert len(times) >= 20
    # The fail-over gap: the longest wait between two publishes across the kill.
    published = [at(x) for x in fired(*beats)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(published)]
    worst = max(gaps)
    print(f"\n{replicas} replicas ({store}): {len(ids)} ticks, longest gap between publishes "
          f"{worst:.3f} s (interval {INTERVAL} s), killed at {killed_at.isoformat()}")
    assert worst <= INTERVAL + 2.0 + 0.5  # interval + take-over time, with a margin


def test_restart_neither_refires_nor_skips(start_worker: Callable[..., WorkerProcess],
                                           queue_name: str, entry_name: str, tmp_path: Path,
                                           pg: Any) -> None:
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "options": {"queue": queue_name}}})
    first = start_worker("--config", config, command="beat")
    wait_for(lambda: len(fired(first)) >= 3, 20, what="three ticks")
    first.stop()
    stopped = datetime.now(UTC)
    second = start_worker("--config", config, command="beat")
    wait_for(lambda: len([x for x in fired(second) if at(x, "scheduled") > stopped]) >= 3, 20,
             what="ticks after the restart")
    second.stop()
    ids = [str(m.headers["id"]) for m in asyncio.run(drain(queue_name))]
    # A gap-free grid across the restart: the ticks due while it was down fired
    # (within the grace time), and none fired twice.
    times = assert_exactly_once(ids, pg, entry_name)
    assert times[0] < stopped < times[-1]
    assert not second.events("beat missed ticks, coalesced into one run")


def test_misfire_beyond_grace_is_coalesced_once(start_worker: Callable[..., WorkerProcess],
                                                queue_name: str, entry_name: str,
                                                tmp_path: Path, pg: Any) -> None:
    grace = 2.0
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "options": {"queue": queue_name}}},
        beat_misfire_grace_time=grace)
    first = start_worker("--config", config, command="beat")
    wait_for(lambda: len(fired(first)) >= 2, 20, what="two ticks")
    first.stop()
    last_fire = at(fired(first)[-1], "scheduled")
    # Stay down long enough that several ticks fall out of the grace time.
    down_until = last_fire + timedelta(seconds=grace + 4 * INTERVAL)
    wait_for(lambda: datetime.now(UTC) > down_until, 30, what="the downtime")
    second = start_worker("--config", config, command="beat")
    wait_for(lambda: len(fired(second)) >= 3, 20, what="ticks after the restart")
    second.stop()

    misses = second.events("beat missed ticks, coalesced into one run")
    assert len(misses) == 1
    assert misses[0]["entry"] == entry_name and misses[0]["missed"] >= 3
    ids = [str(m.headers["id"]) for m in asyncio.run(drain(queue_name))]
    assert len(ids) == len(set(ids))
    restarted = at(second.events("beat started")[0])
    stale = [t for t in claimed_ticks(pg, entry_name)
             if last_fire < t < restarted - timedelta(seconds=grace)]
    # Of the ticks beyond the grace time, at most one (the coalesced run) was published.
    published_stale = [t for t in stale if tick_id(entry_name, t) in ids]
    assert len(published_stale) <= 1
    assert len(stale) <= 1


def beat_cli(*args: str, config: str, **settings: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncworker", "beat", "-A",
                           "tests.apps.compat:app", "--config", config, *args],
                          cwd=REPO, env=process_env(**settings), capture_output=True,
                          text=True, timeout=60)


def test_entries_edited_at_run_time(start_worker: Callable[..., WorkerProcess], queue_name: str,
                                    entry_name: str, tmp_path: Path) -> None:
    static = f"{entry_name}-static"
    config = beat_config(tmp_path / "beat.toml", {static: {
        "task": "compat.echo", "schedule": 60.0, "options": {"queue": queue_name}}},
        beat_sync_every=1.0)
    beat = start_worker("--config", config, command="beat")
    added = f"{entry_name}-added"

    done = beat_cli("entries", "add", added, "compat.echo", "--every", "1",
                    "--options", json.dumps({"queue": queue_name}), config=config)
    assert done.returncode == 0, done.stderr
    t0 = time.monotonic()
    wait_for(lambda: fired(beat, entry=added), 15, what="the added entry to fire")
    print(f"\nadded entry fired {time.monotonic() - t0:.2f} s after `beat entries add`")

    listed = beat_cli("entries", "list", config=config)
    rows = {row["entry"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[static]["source"] == "settings" and rows[added]["source"] == "database"

    assert beat_cli("entries", "pause", added, config=config).returncode == 0
    paused = wait_for(lambda: [x for x in beat.events("beat entry removed")
                               if x["entry"] == added], 15, what="the pause")
    pause_seen = at(paused[0])
    assert not [x for x in fired(beat, entry=added)
                if at(x, "scheduled") > pause_seen + timedelta(seconds=INTERVAL)]

    assert beat_cli("entries", "resume", added, config=config).returncode == 0
    resumed = datetime.now(UTC)
    wait_for(lambda: [x for x in fired(beat, entry=added) if at(x) > resumed], 15,
             what="the resumed entry to fire")

    assert beat_cli("entries", "remove", added, config=config).returncode == 0
    removed = wait_for(lambda: [x for x in beat.events("beat entry removed")
                                if x["entry"] == added and at(x) > resumed], 15,
                       what="the removal")
    assert not [x for x in fired(beat, entry=added)
                if at(x, "scheduled") > at(removed[0]) + timedelta(seconds=INTERVAL)]
    refused = beat_cli("entries", "remove", static, config=config)
    assert refused.returncode == 2 and "read-only" in refused.stderr


def test_messages_equal_celery_beats(start_worker: Callable[..., WorkerProcess],
                                     queue_name: str, entry_name: str, tmp_path: Path) -> None:
    """The same entry, published by `celery beat` and by ours: the same message."""
    entry = {"task": "celery_side.describe", "args": [1, "two"], "kwargs": {"k": [3]},
             "options": {"queue": queue_name, "priority": 5}}
    env = dict(os.environ, CELERY_BROKER_URL=BROKER_URL, CELERY_RESULT_BACKEND="rpc://",
               CELERY_BEAT_SCHEDULE=json.dumps({entry_name: {**entry, "schedule": INTERVAL}}))
    with open(tmp_path / "celery-beat.log", "wb") as log:
        celery_beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.celery_worker:app", "beat",
             "-s", str(tmp_path / "celerybeat-schedule"), "-l", "INFO"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            theirs = wait_for(lambda: asyncio.run(drain(queue_name)), 60,
                              what="a message from celery beat")[0]
        finally:
            celery_beat.terminate()
            celery_beat.wait(30)
    asyncio.run(drain(queue_name))  # whatever it sent while stopping

    config = beat_config(tmp_path / "beat.toml", {entry_name: {**entry, "schedule": INTERVAL}})
    beat = start_worker("--config", config, command="beat")
    ours = wait_for(lambda: asyncio.run(drain(queue_name)), 30, what="a message from ours")[0]
    beat.stop()

    # Per message and per process: the ids, and who sent it.
    differ = {"id", "root_id", "origin"}
    assert {k: v for k, v in ours.headers.items() if k not in differ} == \
        {k: v for k, v in theirs.headers.items() if k not in differ}
    assert ours.headers["root_id"] == ours.headers["id"] == ours.correlation_id
    assert json.loads(ours.body) == json.loads(theirs.body)
    for prop in ("content_type", "content_encoding", "priority", "delivery_mode"):
        assert getattr(ours, prop) == getattr(theirs, prop), prop
    assert (ours.routing_key, ours.exchange) == (theirs.routing_key, theirs.exchange)


def test_worker_with_embedded_beat(start_worker: Callable[..., WorkerProcess], queue_name: str,
                                   entry_name: str, tmp_path: Path, pg: Any) -> None:
    """``worker --beat`` schedules and runs the ticks in one process."""
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.add_async", "schedule": INTERVAL, "args": [2, 3],
        "options": {"queue": queue_name}}})
    worker = start_worker("--beat", "-Q", queue_name, "--config", config)
    assert worker.events("beat started")
    wait_for(lambda: len(fired(worker)) >= 3, 20, what="three ticks")
    ids = [line["task_id"] for line in fired(worker)]
    rows = wait_for(lambda: (r := task_rows(pg, ids)) and len(r) == len(ids) and r, 30,
                    what="the ticks' results")
    assert {row["status"] for row in rows.values()} == {"SUCCESS"}
    worker.stop()
    assert worker.events("beat stopped")


def test_a_dead_claimers_tick_is_taken_over(start_worker: Callable[..., WorkerProcess],
                                            queue_name: str, entry_name: str,
                                            tmp_path: Path, pg: Any) -> None:
    """A tick claimed by a replica that died before publishing is published by
    another, with the tick's own task id, once the claim is stale."""
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": 3600.0, "options": {"queue": queue_name}}},
        beat_claim_timeout=1.0)
    beat = start_worker("--config", config, command="beat")
    scheduled = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    with pg.cursor() as cur:  # what a replica killed between claim and publish leaves
        cur.execute("INSERT INTO asyncworker_beat_ticks (entry, fire_time, claimed_by, "
                    "claimed_at) VALUES (%s, %s, 'dead-replica', now())",
                    (entry_name, scheduled))
    expected = tick_id(entry_name, scheduled)
    taken = wait_for(lambda: [x for x in beat.events("beat took over a tick")
                              if x["task_id"] == expected], 15, what="the take-over")
    assert taken[0]["previous"] == "dead-replica"
    wait_for(lambda: [x for x in fired(beat) if x["task_id"] == expected], 10,
             what="the publish")
    messages = asyncio.run(drain(queue_name))
    assert [str(m.headers["id"]) for m in messages] == [expected]
    with pg.cursor() as cur:
        cur.execute("SELECT claimed_by, sent_at FROM asyncworker_beat_ticks "
                    "WHERE entry = %s AND fire_time = %s", (entry_name, scheduled))
        claimed_by, sent_at = cur.fetchone()
    assert claimed_by != "dead-replica" and sent_at is not None


def test_database_outage_delays_but_loses_no_tick(start_worker: Callable[..., WorkerProcess],
                                                  queue_name: str, entry_name: str,
                                                  tmp_path: Path, pg: Any) -> None:
    """The scheduler's database sessions killed twice: it reconnects, and the ticks
    due meanwhile (within the grace time) still fire, once each."""
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "options": {"queue": queue_name}}})
    beat = start_worker("--config", config, command="beat")
    for round_ in (1, 2):
        wait_for(lambda r=round_: len(fired(beat)) >= 3 * r, 30, what="ticks")
        with pg.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'asyncworker beat'")
            assert cur.fetchone()[0] >= 1
    wait_for(lambda: len(fired(beat)) >= 9, 30, what="ticks after the outages")
    beat.stop()
    assert beat.proc.returncode == 0
    ids = [str(m.headers["id"]) for m in asyncio.run(drain(queue_name))]
    times = assert_exactly_once(ids, pg, entry_name)
    assert len(times) >= 9


def test_broker_outage_republishes_what_failed(start_worker: Callable[..., WorkerProcess],
                                               queue_name: str, entry_name: str,
                                               tmp_path: Path, pg: Any) -> None:
    """RabbitMQ down for a few seconds: publishes fail, their ticks stay claimed and
    unsent, and once the broker is back they are taken over and published with their
    own task ids; no tick is lost."""
    config = beat_config(tmp_path / "beat.toml", {entry_name: {
        "task": "compat.echo", "schedule": INTERVAL, "options": {"queue": queue_name}}},
        beat_claim_timeout=1.0)
    beat = start_worker("--config", config, command="beat")
    ctl = [str(REPO / "deploy/local/services.sh"), "rabbitmqctl", "-q"]
    wait_for(lambda: len(fired(beat)) >= 3, 30, what="ticks")
    subprocess.run([*ctl, "stop_app"], check=True)
    try:
        wait_for(lambda: len(beat.events("beat publish failed")) >= 2, 30,
                 what="publishes failing")
    finally:
        subprocess.run([*ctl, "start_app"], check=True)
    failed = {line["task_id"] for line in beat.events("beat publish failed")}
    wait_for(lambda: failed <= {x["task_id"] for x in fired(beat)}, 60,
             what="the failed ticks published")
    recovered = len(fired(beat))
    wait_for(lambda: len(fired(beat)) >= recovered + 3, 30, what="ticks after the outage")
    beat.stop()
    ids = [str(m.headers["id"]) for m in asyncio.run(drain(queue_name))]
    assert {x["task_id"] for x in beat.events("beat retrying a tick")} >= failed
    # A publish whose confirm was lost may have reached the queue: its repeat carries
    # the same id. Nothing else is repeated, and no tick of the grid is missing.
    repeated = {i for i, n in Counter(ids).items() if n > 1}
    assert repeated <= failed
    times = assert_exactly_once(sorted(set(ids)), pg, entry_name)
    assert len(times) >= 6
    print(f"\nbroker outage: {len(failed)} publish(es) failed and were taken over, "
          f"{len(repeated)} reached the queue twice")
