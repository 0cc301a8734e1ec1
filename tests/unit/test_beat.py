"""The scheduler: entries as Celery writes them, tick ids, catch-up, and replicas
sharing one store (a ``MemoryStore``, and a memory:// broker to count what is published).

Times are explicit: ``Beat.due_ticks(now)`` and ``Beat.fire()`` are driven directly, and
the one thing that needs real time to pass (a claim going stale) is polled with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from asyncworker import App
from asyncworker.beat import Beat, BeatSettings, Entry, Tick, scheduler, tick_id
from asyncworker.beat.entries import BEAT_HEADER, TICK_NAMESPACE, load
from asyncworker.beat.store import History, MemoryStore
from asyncworker.broker.memory import MemoryBroker
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.hooks import WorkerHooks
from asyncworker.protocol import OutgoingMessage
from asyncworker.schedules import crontab, schedule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


def at(seconds: float) -> datetime:
    """``seconds`` after ``T0``."""
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ASYNCWORKER_"):
            monkeypatch.delenv(key)


class Recorder(WorkerHooks):
    """What the scheduler reported through the hooks."""

    def __init__(self) -> None:
        self.fired: list[Tick] = []
        self.missed: list[tuple[Tick, int]] = []
        self.took_over: list[tuple[Tick, str]] = []

    def beat_fired(self, tick: Tick, lag: float) -> None:
        self.fired.append(tick)

    def beat_missed(self, tick: Tick, missed: int) -> None:
        self.missed.append((tick, missed))

    def beat_took_over(self, tick: Tick, previous: str) -> None:
        self.took_over.append((tick, previous))


def make_app(broker_url: str | None = None, **settings: Any) -> tuple[App, Recorder]:
    """An App on a memory:// broker of its own (or the one ``broker_url`` names)."""
    app = App("beat-test", broker_url=broker_url or f"memory://beat-{uuid.uuid4().hex}",
              **settings)
    hooks = Recorder()
    app.add_hooks(hooks)
    return app, hooks


async def start(app: App, store: MemoryStore, node: str = "a") -> Beat:
    """A replica with its entries loaded, as ``Beat.run`` leaves it before its loop."""
    beat = Beat(app, store=store, node=node)
    await beat.sync_entries()
    return beat


def anchored(*names: str, anchor: datetime = T0) -> MemoryStore:
    """A store in which ``names`` were first scheduled at ``anchor``."""
    store = MemoryStore()
    for name in names:
        store.histories[name] = History(anchor)
    return store


async def published(app: App) -> list[tuple[str, str, OutgoingMessage]]:
    """Every (exchange, routing key, message) published on the app's memory broker."""
    broker = await app.get_broker()
    assert isinstance(broker, MemoryBroker)
    return broker.published


def body(message: OutgoingMessage) -> list[Any]:
    """``[args, kwargs, embed]`` of a protocol-2 JSON message."""
    decoded: list[Any] = json.loads(message.body)
    return decoded


def ticks(name: str, *seconds: float) -> list[Tick]:
    return [Tick(name, at(s)) for s in seconds]


# -- entries ------------------------------------------------------------------------

CELERY_TOML = """
[nightly]
task = "reports.nightly"
schedule = { crontab = { minute = "30", hour = "2", day_of_week = "mon-fri" } }
args = [1, "two"]
kwargs = { full = true }
options = { queue = "reports", priority = 5, expires = 3600 }

[health]
task = "health.check"
schedule = 30

[quarter]
task = "stats.flush"
schedule = { crontab = "*/15 9-17 * * 1-5" }

[hourly]
task = "stats.hourly"
schedule = { hours = 1, minutes = 30, relative = true }
"""


def test_entries_in_celerys_toml_shape() -> None:
    app = App("beat-entries")
    entries = load(tomllib.loads(CELERY_TOML), app)
    assert list(entries) == ["nightly", "health", "quarter", "hourly"]
    nightly = entries["nightly"]
    assert nightly == Entry("nightly", "reports.nightly",
                            crontab(minute=30, hour=2, day_of_week="mon-fri"), (1, "two"),
                            {"full": True}, {"queue": "reports", "priority": 5, "expires": 3600})
    assert nightly.source == "settings" and nightly.enabled
    assert entries["health"].schedule == schedule(30)
    assert entries["health"].args == () and entries["health"].kwargs == {}
    assert entries["quarter"].schedule == crontab(minute="*/15", hour="9-17",
                                                  day_of_week="1-5")
    assert entries["hourly"].schedule == schedule(timedelta(hours=1, minutes=30), relative=True)
    assert nightly.describe() == {
        "entry": "nightly", "task": "reports.nightly",
        "schedule": {"crontab": {"minute": "30", "hour": "2", "day_of_week": "mon-fri",
                                 "day_of_month": "*", "month_of_year": "*"}},
        "args": [1, "two"], "kwargs": {"full": True},
        "options": {"queue": "reports", "priority": 5, "expires": 3600},
        "source": "settings", "enabled": True}


def test_entries_as_python_objects_in_app_settings() -> None:
    app = App("beat-objects", beat_schedule={
        "cron": {"task": "a.cron", "schedule": crontab(minute=0, hour="*/3")},
        "sched": {"task": "a.sched", "schedule": schedule(run_every=timedelta(minutes=5)),
                  "args": (1, 2)},
        "delta": {"task": "a.delta", "schedule": timedelta(seconds=90), "kwargs": {"x": 1}},
        "float": {"task": "a.float", "schedule": 12.5, "relative": True},
    })
    entries = load(app.settings.section(BeatSettings).beat_schedule, app)
    assert entries["cron"].schedule == crontab(minute="0", hour="0,3,6,9,12,15,18,21")
    assert entries["sched"].schedule == schedule(300) and entries["sched"].args == (1, 2)
    assert entries["delta"].schedule == schedule(90) and entries["delta"].kwargs == {"x": 1}
    assert entries["float"].schedule == schedule(12.5, relative=True)
    assert {name: e.task for name, e in entries.items()} == {
        "cron": "a.cron", "sched": "a.sched", "delta": "a.delta", "float": "a.float"}


VALID = {"task": "t.job", "schedule": 60}


@pytest.mark.parametrize(("config", "reason"), [
    ("every minute", "must be a table"),
    ({**VALID, "expires": 10}, r"unknown key\(s\) \['expires'\]"),
    ({**VALID, "name": "x", "enabled": True}, r"unknown key\(s\) \['enabled', 'name'\]"),
    ({"schedule": 60}, "'task' must be a task name, not None"),
    ({**VALID, "task": ""}, "'task' must be a task name"),
    ({**VALID, "task": 5}, "'task' must be a task name, not 5"),
    ({"task": "t.job"}, "'schedule' is missing"),
    ({**VALID, "args": "1, 2"}, "'args' must be a list, not '1, 2'"),
    ({**VALID, "args": {"a": 1}}, "'args' must be a list"),
    ({**VALID, "args": 7}, "'args' must be a list, not 7"),
    ({**VALID, "kwargs": [1, 2]}, "'kwargs' must be a table, not"),
    ({**VALID, "kwargs": "x=1"}, "'kwargs' must be a table"),
    ({**VALID, "options": {"bogus": 1}}, r"unknown option\(s\) \['bogus'\]"),
    ({**VALID, "options": {"queue": "q", "countdwn": 5}}, r"unknown option\(s\) \['countdwn'\]"),
    ({**VALID, "options": {"task_id": "fixed"}},
     r"unknown option\(s\) \['task_id'\] \(task_id is set per tick\)"),
])
def test_entry_refused_with_its_name(config: Any, reason: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=reason) as refused:
        Entry.from_config("job-7", config, App("beat-refused"))
    assert str(refused.value).startswith("beat_schedule entry 'job-7': ")


@pytest.mark.parametrize(("schedule_value", "reason"), [
    ("every 5 minutes", "schedule must be seconds, an interval table or a crontab table"),
    ("*/5 * * * *", "schedule must be seconds"),
    (True, "schedule must be seconds, an interval or a crontab, not True"),
    (None, "schedule must be seconds"),
    ([60], "schedule must be seconds"),
    (0, "an interval must be positive"),
    (-5.0, "an interval must be positive"),
    (timedelta(0), "an interval must be positive"),
    ({}, "an interval must be positive"),
    ({"minutes": "5"}, "interval minutes must be a number"),
    ({"minutes": True}, "interval minutes must be a number"),
    ({"minutes": 5, "every": 1}, r"unknown schedule key\(s\) \['every'\]"),
    ({"minutes": 5, "relative": "yes"}, "interval relative must be true or false"),
    ({"crontab": {"minute": "0"}, "hours": 1}, "a crontab schedule has only the 'crontab' key"),
    ({"crontab": 5}, "crontab must be a table of fields or a string"),
    ({"crontab": "0 0 * *"}, "a crontab string has five fields"),
    ({"crontab": "0 0 * * * *"}, "a crontab string has five fields"),
    ({"crontab": {"day": "1"}}, "'day' \\(Celery's is 'day_of_month'\\) not in Celery's crontab"),
    ({"crontab": {"dow": "1"}}, "'dow' \\(Celery's is 'day_of_week'\\)"),
    ({"crontab": {"second": "0"}}, "crontab field\\(s\\) 'second' not in Celery's crontab"),
    ({"crontab": {"minute": "61"}}, "crontab minute value 61 is out of range 0-59"),
    ({"crontab": {"minute": 60}}, "crontab minute value 60 is out of range 0-59"),
    ({"crontab": {"hour": "24"}}, "crontab hour value 24 is out of range 0-23"),
    ({"crontab": {"day_of_week": "7"}}, "day_of_week value 7 is out of range 0-6"),
    ({"crontab": {"day_of_week": "funday"}}, "'funday' is not a day"),
    ({"crontab": {"day_of_week": "mo"}}, "'mo' is not a day"),
    ({"crontab": {"month_of_year": "smarch"}}, "'smarch' is not a month"),
    ({"crontab": {"day_of_month": "0"}}, "day_of_month value 0 is out of range 1-31"),
    ({"crontab": {"day_of_month": "30", "month_of_year": "2"}},
     "crontab can never fire: no day 30 in month\\(s\\) 2"),
    ({"crontab": {"day_of_month": "31", "month_of_year": "apr,jun"}}, "can never fire"),
    ({"crontab": {"minute": "5/2"}}, "a step needs '\\*' or a range"),
    ({"crontab": {"minute": "*/0"}}, "bad step '0'"),
    ({"crontab": {"minute": "1-"}}, "cannot read '1-'"),
    ({"crontab": {"minute": ""}}, "cannot read"),
    ({"crontab": {"minute": True}}, "crontab minute cannot be True"),
    ({"crontab": {"minute": 1.5}}, "crontab minute must be text or an integer"),
    ({"crontab": {"minute": [1, "2"]}}, "crontab minute values must be integers"),
    ({"crontab": {"minute": []}}, "crontab minute \\[\\] selects nothing"),
])
def test_every_invalid_schedule_is_refused_with_the_entry_name(schedule_value: Any,
                                                               reason: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=reason) as refused:
        Entry.from_config("job-7", {"task": "t.job", "schedule": schedule_value},
                          App("beat-schedules"))
    assert str(refused.value).startswith("beat_schedule entry 'job-7': ")


def test_an_entry_no_route_can_place_is_refused() -> None:
    strict = App("beat-routes", task_create_missing_queues=False,
                 task_queues={"celery": {}, "reports": {}})

    @strict.task(name="t.special", queue="special")
    def special() -> None: ...

    def refused(config: dict[str, Any]) -> str:
        with pytest.raises(ImproperlyConfigured) as info:
            Entry.from_config("job-7", {**VALID, **config}, strict)
        return str(info.value)

    assert refused({"options": {"queue": "nowhere"}}) == (
        "beat_schedule entry 'job-7': queue 'nowhere' is not defined in task_queues")
    # A registered task's own queue is checked when the options do not route it.
    assert refused({"task": "t.special"}) == (
        "beat_schedule entry 'job-7': queue 'special' is not defined in task_queues")
    assert refused({"options": {"exchange": ""}}) == (
        "beat_schedule entry 'job-7': no route places task 't.job' on a queue")
    # Routable alternatives are accepted.
    assert Entry.from_config("ok", {**VALID, "options": {"queue": "reports"}}, strict)
    assert Entry.from_config("ok", {**VALID, "task": "t.special",
                                    "options": {"queue": "reports"}}, strict)
    assert Entry.from_config("ok", VALID, strict)  # the default queue, celery
    # Celery's default creates missing queues, so any queue name places the task.
    assert Entry.from_config("ok", {**VALID, "options": {"queue": "nowhere"}},
                             App("beat-lenient"))


@pytest.mark.parametrize("options", ["queue=reports", 5])
def test_options_not_a_table_are_refused_with_the_entry_name(options: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"beat_schedule entry 'job-7': .*options"):
        Entry.from_config("job-7", {**VALID, "options": options}, App("beat-options"))


@pytest.mark.parametrize(("key", "value"), [("args", ""), ("args", 0), ("kwargs", []),
                                            ("kwargs", False)])
def test_falsy_args_or_kwargs_of_the_wrong_type_are_refused(key: str, value: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"'{key}' must be a"):
        Entry.from_config("job-7", {**VALID, key: value}, App("beat-falsy"))


# -- tick ids ------------------------------------------------------------------------

def test_tick_id_is_a_uuid5_of_entry_and_instant() -> None:
    utc = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    same_instant = [utc, utc.astimezone(NEW_YORK),
                    utc.astimezone(timezone(timedelta(hours=5, minutes=30)))]
    assert {tick_id("nightly", t) for t in same_instant} == {
        "90714dae-a04a-57f3-998b-d772f3ad9b4e"}  # fixed across versions and replicas
    value = uuid.UUID(tick_id("nightly", utc))
    assert value.version == 5
    assert value == uuid.uuid5(TICK_NAMESPACE, "nightly@2026-03-08T07:30:00+00:00")
    assert tick_id("nightly", utc + timedelta(microseconds=1)) != str(value)
    assert tick_id("nightly-2", utc) != str(value)
    # A tick is its entry and instant: the same tick (and claim) in any representation.
    assert Tick("nightly", utc.astimezone(NEW_YORK)) == Tick("nightly", utc)
    assert Tick("nightly", utc.astimezone(NEW_YORK)).task_id == str(value)


# -- due ticks -----------------------------------------------------------------------

async def test_an_interval_first_fires_one_interval_after_its_anchor() -> None:
    app, _ = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}})
    beat = await start(app, anchored("e"))
    assert beat.plans["e"].next == at(10)
    assert beat.due_ticks(at(9.999)) == []
    assert beat.due_ticks(at(10)) == ticks("e", 10)
    assert beat.due_ticks(at(10)) == []  # the plan moved past it
    assert beat.plans["e"].next == at(20)


async def test_an_entry_seen_for_the_first_time_is_anchored_now() -> None:
    app, _ = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}})
    store = MemoryStore()
    before = datetime.now(UTC)
    beat = await start(app, store)
    anchor = store.histories["e"].anchor
    assert before <= anchor <= datetime.now(UTC)
    assert beat.plans["e"].next == anchor + timedelta(seconds=10)


async def test_late_ticks_within_the_grace_all_fire() -> None:
    app, hooks = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                          beat_misfire_grace_time=25)
    beat = await start(app, anchored("e"))
    due = beat.due_ticks(at(35))  # 10 is 25 s late: still within the grace
    assert due == ticks("e", 10, 20, 30)
    await beat.fire(due)
    assert hooks.missed == [] and hooks.fired == due
    assert [m.headers["id"] for _, _, m in await published(app)] == [t.task_id for t in due]


async def test_stale_ticks_coalesce_into_the_first_timely_one() -> None:
    app, hooks = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                          beat_misfire_grace_time=25)
    beat = await start(app, anchored("e"))
    due = beat.due_ticks(at(100))  # 10..70 are stale; 80, 90, 100 are timely
    assert due == ticks("e", 80, 90, 100)
    assert beat.plans["e"].next == at(110)
    await beat.fire(due)
    assert hooks.missed == [(Tick("e", at(80)), 7)]
    assert hooks.fired == due
    assert len(await published(app)) == 3


async def test_without_a_timely_tick_one_run_is_named_by_the_first_missed() -> None:
    app, hooks = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                          beat_misfire_grace_time=5)
    beat = await start(app, anchored("e"))
    due = beat.due_ticks(at(109))  # 10..100 all later than 5 s
    assert due == ticks("e", 10)
    assert beat.plans["e"].next == at(110)
    await beat.fire(due)
    assert hooks.missed == [(Tick("e", at(10)), 10)]
    [(_, _, message)] = await published(app)
    assert message.headers["id"] == tick_id("e", at(10))


async def test_a_crontab_is_evaluated_in_the_configured_timezone() -> None:
    """A daily 02:30 in New York: the skipped 02:30 of 8 March 2026 fires at 03:30 EDT."""
    app, _ = make_app(timezone="America/New_York", beat_misfire_grace_time=10 * 86400,
                      beat_schedule={"n": {"task": "t.n",
                                           "schedule": {"crontab": {"minute": 30, "hour": 2}}}})
    anchor = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK).astimezone(UTC)
    beat = await start(app, anchored("n", anchor=anchor))
    due = beat.due_ticks(datetime(2026, 3, 10, 12, tzinfo=NEW_YORK))
    assert [t.fire_time for t in due] == [datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
                                          datetime(2026, 3, 9, 6, 30, tzinfo=UTC),
                                          datetime(2026, 3, 10, 6, 30, tzinfo=UTC)]
    assert beat.plans["n"].next == datetime(2026, 3, 11, 6, 30, tzinfo=UTC)


async def test_a_restart_fires_what_is_new_and_not_what_fired() -> None:
    app, hooks = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 60}},
                          beat_misfire_grace_time=100)
    store = anchored("e")
    first = await start(app, store, "first")
    await first.fire(first.due_ticks(at(120)))
    assert hooks.fired == ticks("e", 60, 120)
    assert store.histories["e"].last_fire == at(120)
    # The first replica dies; another starts on the same store later.
    again = await start(app, store, "again")
    assert again.plans["e"].next == at(180)
    due = again.due_ticks(at(250))  # 180 is 70 s late: within the grace
    assert due == ticks("e", 180, 240)
    await again.fire(due)
    assert hooks.missed == []
    assert [m.headers["id"] for _, _, m in await published(app)] == [
        tick_id("e", at(s)) for s in (60, 120, 180, 240)]


async def test_a_restart_after_a_coalesced_run_does_not_run_it_again() -> None:
    app, _ = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                      beat_misfire_grace_time=5)
    store = anchored("e")
    first = await start(app, store, "first")
    await first.fire(first.due_ticks(at(109)))  # one run for 10..100, named by 10
    again = await start(app, store, "again")
    assert again.due_ticks(at(109)) == []  # nothing new is due before 110
    assert len(await published(app)) == 1


async def test_catching_up_more_than_max_catch_up_ticks_terminates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "MAX_CATCH_UP", 5)
    app, _ = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                      beat_misfire_grace_time=25)
    beat = await start(app, anchored("e"))
    real_next = beat._next
    calls = 0

    def guarded(*args: Any) -> datetime | None:
        nonlocal calls
        calls += 1
        if calls > 1000:
            raise RuntimeError("due_ticks does not terminate")
        return real_next(*args)

    monkeypatch.setattr(beat, "_next", guarded)
    assert beat.due_ticks(at(100)) == ticks("e", 80, 90, 100)


async def test_catching_up_more_than_max_catch_up_ticks_keeps_the_timely_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler, "MAX_CATCH_UP", 5)
    app, _ = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10}},
                      beat_misfire_grace_time=5)
    beat = await start(app, anchored("e"))
    due = beat.due_ticks(at(102))  # 10..90 stale, 100 timely
    assert beat.plans["e"].next == at(110)
    # The count stops at MAX_CATCH_UP (the log line says "at least").
    assert due == ticks("e", 100)
    assert {t: m.count for t, m in beat._missed.items()} == {Tick("e", at(100)): 5}


async def test_step_fires_what_is_due_now_and_says_when_to_wake() -> None:
    app, hooks = make_app(beat_schedule={"hourly": {"task": "t.h", "schedule": 3600}},
                          beat_sync_every=30, beat_claim_timeout=60)
    anchor = datetime.now(UTC) - timedelta(seconds=3600.5)
    beat = await start(app, anchored("hourly", anchor=anchor))
    delay = await beat.step()
    assert hooks.fired == [Tick("hourly", anchor + timedelta(hours=1))]
    assert 25 < delay <= 30  # the next chore (the entries sync), not the next tick
    await beat.step()
    assert len(await published(app)) == 1


# -- replicas ---------------------------------------------------------------------------

async def test_two_replicas_publish_each_tick_exactly_once() -> None:
    url = f"memory://beat-{uuid.uuid4().hex}"
    settings: dict[str, Any] = {"beat_misfire_grace_time": 1000, "beat_schedule": {
        "report": {"task": "reports.build", "schedule": 10, "args": [1, "a"],
                   "kwargs": {"k": 2}, "options": {"queue": "reports", "priority": 3}},
        "ping": {"task": "health.ping", "schedule": {"crontab": {"minute": "*"}}},
    }}
    app_a, hooks_a = make_app(url, **settings)
    app_b, hooks_b = make_app(url, **settings)  # another process, the same broker
    store = anchored("report", "ping")
    a, b = await start(app_a, store, "a"), await start(app_b, store, "b")
    due = a.due_ticks(at(125))
    assert b.due_ticks(at(125)) == due
    expected = ticks("report", *range(10, 121, 10)) + ticks("ping", 60, 120)
    assert sorted(due, key=lambda t: (t.entry != "report", t.fire_time)) == expected

    await b.fire(due[::3])  # b gets ahead on some ticks, then both race for all of them
    await asyncio.gather(a.fire(due), b.fire(due))
    await a.fire(due)  # and firing again publishes nothing

    sent = await published(app_a)
    assert sent is await published(app_b)
    assert sorted(m.headers["id"] for _, _, m in sent) == sorted(t.task_id for t in expected)
    assert len(sent) == len(expected)
    assert hooks_a.fired and hooks_b.fired
    assert sorted(hooks_a.fired + hooks_b.fired, key=lambda t: (t.entry, t.fire_time)) == sorted(
        expected, key=lambda t: (t.entry, t.fire_time))
    assert all(claim[2] for claim in store.claims.values())  # all marked sent
    for exchange, routing_key, message in sent:
        assert message.headers[BEAT_HEADER] is True
        if message.headers["task"] == "reports.build":
            assert (exchange, routing_key) == ("", "reports")
            assert body(message)[:2] == [[1, "a"], {"k": 2}]
            assert message.priority == 3
        else:
            assert message.headers["task"] == "health.ping"
            assert (exchange, routing_key) == ("", "celery")
            assert body(message)[:2] == [[], {}]
    broker = await app_a.get_broker()
    assert isinstance(broker, MemoryBroker)
    assert len(broker.messages("reports")) == 12 and len(broker.messages("celery")) == 2


async def test_a_registered_task_is_sent_to_its_own_queue() -> None:
    app, _ = make_app(beat_schedule={"e": {"task": "t.own", "schedule": 10}})

    @app.task(name="t.own", queue="own")
    def own() -> None: ...

    beat = await start(app, anchored("e"))
    await beat.fire(beat.due_ticks(at(10)))
    [(exchange, routing_key, message)] = await published(app)
    assert (exchange, routing_key, message.headers["id"]) == ("", "own", tick_id("e", at(10)))
    assert message.headers[BEAT_HEADER] is True


async def test_a_tick_claimed_and_never_sent_is_taken_over() -> None:
    app, hooks = make_app(beat_schedule={"e": {"task": "t.e", "schedule": 10, "args": [3]}},
                          beat_claim_timeout=0.2)
    store = anchored("e")
    alive = await start(app, store, "alive")
    due = alive.due_ticks(at(10))
    # A replica claimed the tick and died before publishing it.
    assert await store.claim(due, "dead") == due
    await alive.fire(due)  # the claim is not alive's to publish
    assert await published(app) == []
    await alive.take_over()  # the claim is not stale yet
    assert await published(app) == [] and hooks.took_over == []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not await published(app):
        assert loop.time() < deadline, "the stale claim was never taken over"
        await asyncio.sleep(0.01)
        await alive.take_over()

    [(_, routing_key, message)] = await published(app)
    assert message.headers["id"] == tick_id("e", at(10)) == due[0].task_id
    assert (routing_key, body(message)[0], message.headers[BEAT_HEADER]) == ("celery", [3], True)
    assert hooks.took_over == [(due[0], "dead")]
    assert hooks.fired == due
    assert store.claims[("e", at(10))][0::2] == ["alive", True]
    await alive.take_over()  # settled: never taken over again
    assert len(await published(app)) == 1


# -- the entries table ----------------------------------------------------------------

async def test_sync_entries_applies_the_entries_table() -> None:
    app, _ = make_app(beat_schedule={"static": {"task": "t.static", "schedule": 60}})
    store = MemoryStore()
    beat = await start(app, store)
    assert list(beat.plans) == ["static"]

    await store.save_entry("db", {"task": "t.db", "schedule": {"minutes": 5}, "args": [1]},
                           replace=False)
    assert "db" not in beat.plans  # until the next sync
    await beat.sync_entries()
    db = beat.plans["db"].entry
    assert (db.task, db.schedule, db.args, db.source) == ("t.db", schedule(300), (1,),
                                                         "database")

    await store.save_entry("db", {"task": "t.db", "schedule": 60, "args": [2]}, replace=True)
    await beat.sync_entries()
    assert beat.plans["db"].entry.args == (2,)
    assert beat.plans["db"].entry.schedule == schedule(60)

    await store.set_enabled("db", False)
    await beat.sync_entries()
    assert set(beat.plans) == {"static"}
    await store.set_enabled("db", True)
    await beat.sync_entries()
    assert set(beat.plans) == {"static", "db"}

    await store.remove_entry("db")
    await beat.sync_entries()
    assert set(beat.plans) == {"static"}


async def test_a_bad_row_is_skipped_and_the_others_kept() -> None:
    app, _ = make_app(beat_schedule={"static": {"task": "t.static", "schedule": 60}})
    store = MemoryStore()
    beat = await start(app, store)
    await store.save_entry("good", {"task": "t.good", "schedule": 30}, replace=False)
    await store.save_entry("bad", {"task": "t.bad", "schedule": {"crontab": {"minute": "61"}}},
                           replace=False)
    await store.save_entry("typo", {"task": "t.typo", "schedul": 30}, replace=False)
    await beat.sync_entries()
    assert set(beat.plans) == {"static", "good"}
    # A good row turned bad is dropped; the rest stay.
    await store.save_entry("good", {"task": "t.good", "schedule": "often"}, replace=True)
    await beat.sync_entries()
    assert set(beat.plans) == {"static"}


async def test_a_row_named_like_a_settings_entry_is_ignored() -> None:
    app, _ = make_app(beat_schedule={"static": {"task": "t.static", "schedule": 60}})
    store = MemoryStore()
    beat = await start(app, store)
    await store.save_entry("static", {"task": "t.hijack", "schedule": 1}, replace=False)
    await store.save_entry("other", {"task": "t.other", "schedule": 1}, replace=False)
    await beat.sync_entries()
    assert set(beat.plans) == {"static", "other"}
    static = beat.plans["static"].entry
    assert (static.task, static.schedule, static.source) == ("t.static", schedule(60),
                                                             "settings")


async def test_step_picks_table_changes_up() -> None:
    app, _ = make_app(beat_sync_every=0, beat_claim_timeout=60)
    store = MemoryStore()
    beat = await start(app, store)
    await beat.step()
    assert beat.plans == {}
    await store.save_entry("db", {"task": "t.db", "schedule": 3600}, replace=False)
    await beat.step()
    assert list(beat.plans) == ["db"]
    await store.set_enabled("db", False)
    await beat.step()
    assert beat.plans == {}


# -- settings ----------------------------------------------------------------------------

def test_timezone() -> None:
    assert App("beat-tz").settings.section(BeatSettings).tz() == ZoneInfo("UTC")
    assert BeatSettings().tz() == ZoneInfo("UTC")
    named = App("beat-tz-named", timezone="Asia/Kolkata").settings.section(BeatSettings)
    assert named.tz() == ZoneInfo("Asia/Kolkata")
    assert BeatSettings(timezone="Europe/Paris", enable_utc=False).tz() == ZoneInfo(
        "Europe/Paris")
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd"):
        with pytest.raises(ImproperlyConfigured, match=f"unknown timezone '{bad}'"):
            BeatSettings(timezone=bad).tz()
    from tzlocal import get_localzone

    assert BeatSettings(enable_utc=False).tz() == get_localzone()
