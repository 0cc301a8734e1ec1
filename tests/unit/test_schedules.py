"""Celery's ``crontab`` and ``schedule``: fire times checked against Celery's own; parse()."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import celery.schedules
import pytest
from celery import Celery

from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.schedules import BaseSchedule, ScheduleError, crontab, parse, schedule

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SEOUL = "Asia/Seoul"
CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def celery_seq(fields: dict[str, Any], tzname: str, start: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times after ``start`` as Celery's own crontab computes them."""
    app = Celery(set_as_current=False)
    app.conf.timezone = tzname
    app.conf.enable_utc = True
    cron = celery.schedules.crontab(app=app, **fields)
    tz = ZoneInfo(tzname)
    last = start.astimezone(tz)
    out = []
    for _ in range(n):
        last_run_at, delta, _now = cron.remaining_delta(last, tz=tz)
        nxt = (last_run_at + delta).astimezone(UTC)
        out.append(nxt)
        last = nxt.astimezone(tz)
    return out


def our_seq(fields: dict[str, Any], tzname: str, start: datetime, n: int) -> list[datetime]:
    cron, tz = crontab(**fields), ZoneInfo(tzname)
    out, after = [], start
    for _ in range(n):
        nxt = cron.next_after(after, tz, start)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


def celery_fields(**fields: Any) -> dict[str, set[int]]:
    cron = celery.schedules.crontab(**fields)
    return {name: set(getattr(cron, name)) for name in CRON_FIELDS}


def our_fields(cron: crontab) -> dict[str, set[int]]:
    return {name: set(getattr(cron, name)) for name in CRON_FIELDS}


def celery_from_string_fields(text: str) -> dict[str, str]:
    """The five fields as Celery's own from_string splits them."""
    cron = celery.schedules.crontab.from_string(text)
    return {name: getattr(cron, f"_orig_{name}") for name in CRON_FIELDS}


def case(ident: str, tzname: str, start: datetime, n: int = 8, **fields: Any) -> Any:
    return pytest.param(fields, tzname, start, n, id=ident)


# -- the crontab table, checked against Celery --------------------------------------------
CRONTAB_CASES = [
    # Steps, ranges, lists.
    case("utc-every-15-min", "UTC", utc(2026, 1, 1, 0, 7), minute="*/15"),
    case("utc-step-range", "UTC", utc(2026, 1, 1), 10, minute="1-10/3", hour="*/6"),
    case("utc-step-7-uneven", "UTC", utc(2026, 5, 5, 23, 50), 10, minute="*/7"),
    case("utc-list-0-30", "UTC", utc(2026, 2, 27, 19), minute="0,30", hour="8,20"),
    case("utc-hour-range-weekdays", "UTC", utc(2026, 1, 2, 16, 30), 10,
         minute=0, hour="9-17", day_of_week="mon-fri"),
    case("utc-hour-range-wraps-midnight", "UTC", utc(2026, 12, 31, 20), 10, minute=0,
         hour="22-2"),
    case("utc-hour-wrap-with-step", "UTC", utc(2026, 6, 1), minute=15, hour="22-4/2"),
    case("utc-every-minute-start-with-seconds", "UTC", datetime(2026, 7, 1, 12, 0, 30, 500,
                                                                 tzinfo=UTC), 6),
    case("utc-start-exactly-on-fire", "UTC", utc(2026, 7, 1, 10, 5), 6, minute="*/5"),
    # Names.
    case("utc-weekend-sat-sun-wraps", "UTC", utc(2026, 1, 1), 6, minute=0, hour=12,
         day_of_week="sat-sun"),
    case("utc-full-day-name-monday", "UTC", utc(2026, 1, 1), 6, minute=15, hour=3,
         day_of_week="monday"),
    case("utc-mixed-day-names", "UTC", utc(2026, 4, 1), 10, minute=0, hour=6,
         day_of_week="mon,wed-fri,sun"),
    case("utc-month-jan", "UTC", utc(2026, 1, 1, 0, 0, 1), 6, minute=0, hour=0,
         day_of_month=1, month_of_year="jan"),
    case("utc-month-dec-25", "UTC", utc(2026, 1, 1), 6, minute=0, hour=6, day_of_month=25,
         month_of_year="dec"),
    case("utc-quarterly-month-names", "UTC", utc(2026, 1, 1), minute=30, hour=9,
         day_of_month=15, month_of_year="mar,jun,sep,dec"),
    case("utc-month-range-wraps-nov-feb", "UTC", utc(2026, 1, 1), minute=0, hour=0,
         day_of_month=1, month_of_year="nov-feb"),
    # Integers and collections of integers.
    case("utc-integers-sunday-is-0", "UTC", utc(2026, 1, 1), 6, minute=5, hour=4,
         day_of_week=0),
    case("utc-int-list-and-set", "UTC", utc(2026, 1, 1), minute=[0, 20, 40], hour={1, 13}),
    # day_of_week and day_of_month must both match.
    case("utc-friday-the-13th", "UTC", utc(2026, 1, 1), 6, minute=0, hour=0,
         day_of_month=13, day_of_week="fri"),
    case("utc-first-monday-of-month", "UTC", utc(2026, 1, 1), minute=0, hour=9,
         day_of_month="1-7", day_of_week="mon"),
    case("utc-monday-with-explicit-all-days", "UTC", utc(2026, 1, 1), 6, minute=0, hour=9,
         day_of_month="1-31", day_of_week="mon"),
    case("utc-last-saturday-ish", "UTC", utc(2026, 1, 1), 6, minute=0, hour=0,
         day_of_month="25-31", day_of_week="sat"),
    # Month ends and leap days.
    case("utc-day-31-skips-short-months", "UTC", utc(2026, 1, 1), minute=0, hour=0,
         day_of_month=31),
    case("utc-day-30-skips-february", "UTC", utc(2026, 1, 1), minute=0, hour=0,
         day_of_month=30),
    case("utc-year-end-rollover", "UTC", utc(2026, 12, 31, 23, 58), 6, minute=59, hour=23,
         day_of_month=31, month_of_year=12),
    case("utc-feb-29-leap-years", "UTC", utc(2026, 1, 1), 6, minute=0, hour=0,
         day_of_month=29, month_of_year=2),
    case("utc-feb-29-skips-2100", "UTC", utc(2090, 1, 1), 4, minute=0, hour=0,
         day_of_month=29, month_of_year="feb"),
    case("utc-feb-28-29", "UTC", utc(2027, 1, 1), 6, minute=0, hour=0,
         day_of_month="28-29", month_of_year=2),
    # Asia/Seoul (UTC+9, no DST): days and dates are local.
    case("seoul-weekday-mornings", SEOUL, utc(2026, 3, 6, 23), minute=0, hour=9,
         day_of_week="mon-fri"),
    case("seoul-midnight-daily", SEOUL, utc(2026, 1, 1, 14, 59), 6, minute=0, hour=0),
    case("seoul-month-end", SEOUL, utc(2026, 1, 1), 6, minute=59, hour=23, day_of_month=31),
    case("seoul-monday-early-hours", SEOUL, utc(2026, 1, 1), 6, minute=30, hour="0-1",
         day_of_week="mon"),
    # America/New_York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
    case("ny-spring-daily-0230-in-skipped-hour", NY, utc(2026, 3, 7, 12), 6, minute=30,
         hour=2),
    case("ny-spring-quarter-hours-in-skipped-hour", NY, utc(2026, 3, 7, 12), minute="*/15",
         hour=2),
    case("ny-spring-skipped-hour-collides-with-3am", NY, utc(2026, 3, 7, 12), 6, minute=30,
         hour="2,3"),
    case("ny-spring-every-20-min-across-change", NY, utc(2026, 3, 8, 6), 10, minute="*/20"),
    case("ny-spring-every-minute-across-change", NY, utc(2026, 3, 8, 6, 57), 6),
    case("ny-spring-weekday-9am", NY, utc(2026, 3, 5), 6, minute=0, hour=9,
         day_of_week="mon-fri"),
    # America/New_York, fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
    case("ny-fall-daily-0130-in-repeated-hour", NY, utc(2026, 10, 31, 12), 6, minute=30,
         hour=1),
    case("ny-fall-quarter-hours-in-repeated-hour", NY, utc(2026, 10, 31, 12), minute="*/15",
         hour=1),
    case("ny-fall-every-20-min-across-change", NY, utc(2026, 11, 1, 4, 50), 10,
         minute="*/20"),
    case("ny-fall-hourly-across-change", NY, utc(2026, 11, 1, 3, 30), minute=0),
    case("ny-fall-every-minute-across-change", NY, utc(2026, 11, 1, 5, 57), 6),
    case("ny-fall-0130-and-0230", NY, utc(2026, 10, 31, 12), 6, minute=30, hour="1,2"),
    # Europe/Berlin, spring forward 2026-03-29 01:00 UTC (02:00 CET -> 03:00 CEST).
    case("berlin-spring-daily-0230-in-skipped-hour", BERLIN, utc(2026, 3, 28, 12), 6,
         minute=30, hour=2),
    case("berlin-spring-every-30-min-across-change", BERLIN, utc(2026, 3, 29, 0), minute="*/30"),
    case("berlin-sundays-0230-across-change", BERLIN, utc(2026, 3, 20), 6, minute=30, hour=2,
         day_of_week="sun"),
    # Europe/Berlin, fall back 2026-10-25 01:00 UTC (03:00 CEST -> 02:00 CET).
    case("berlin-fall-daily-0230-in-repeated-hour", BERLIN, utc(2026, 10, 24, 12), 6,
         minute=30, hour=2),
    case("berlin-fall-every-30-min-across-change", BERLIN, utc(2026, 10, 25, 0), minute="*/30"),
    case("berlin-last-sunday-0230-both-changes", BERLIN, utc(2026, 1, 1), 10, minute=30,
         hour=2, day_of_month="25-31", day_of_week="sun"),
]


@pytest.mark.parametrize(("fields", "tzname", "start", "n"), CRONTAB_CASES)
def test_crontab_matches_celery(fields: dict[str, Any], tzname: str, start: datetime,
                                n: int) -> None:
    assert our_seq(fields, tzname, start, n) == celery_seq(fields, tzname, start, n)


def test_known_difference_start_in_repeated_hour() -> None:
    """The one deliberate difference, pinned on both sides.

    Starting inside the second occurrence of a repeated (fall-back) hour,
    Celery makes the next wall time real with fold=0, in the *first*
    occurrence, so its "next" runs lie before the start (its beat would fire
    them at once, late). Ours are strictly after the start: those wall times
    already fired in their first occurrence.
    """
    fields, start = {"minute": "*/20"}, utc(2026, 11, 1, 6, 10)  # 01:10 EST, the second 01:10
    assert celery_seq(fields, NY, start, 3) == [
        utc(2026, 11, 1, 5, 20), utc(2026, 11, 1, 5, 40), utc(2026, 11, 1, 7, 0)]
    # Ours: 01:20 and 01:40 fired in their first occurrence (EDT), before the start.
    assert our_seq(fields, NY, start, 3) == [
        utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 7, 20), utc(2026, 11, 1, 7, 40)]


def test_crontab_dst_cases_fire_once_per_wall_time() -> None:
    """Spot checks that the DST cases above do exercise the skipped and repeated hours."""
    # 02:30 on 2026-03-08 does not exist in New York: it fires at 03:30 EDT, once.
    spring = our_seq({"minute": 30, "hour": "2,3"}, NY, utc(2026, 3, 7, 12), 4)
    assert spring == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30), utc(2026, 3, 9, 7, 30),
                      utc(2026, 3, 10, 6, 30)]
    # 01:30 on 2026-11-01 happens twice in New York: it fires at the first (EDT) only.
    fall = our_seq({"minute": 30, "hour": 1}, NY, utc(2026, 10, 31, 12), 3)
    assert fall == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)]


def test_crontab_next_after_is_strictly_after() -> None:
    cron, tz = crontab(minute="*/5"), ZoneInfo("UTC")
    assert cron.next_after(utc(2026, 1, 1, 10, 5), tz, utc(2026, 1, 1)) == utc(2026, 1, 1, 10, 10)
    before = utc(2026, 1, 1, 10, 5) - timedelta(microseconds=1)
    assert cron.next_after(before, tz, utc(2026, 1, 1)) == utc(2026, 1, 1, 10, 5)


# -- Celery's signatures and from_string ------------------------------------------------
@pytest.mark.parametrize(("ours", "theirs"), [
    (crontab.__init__, celery.schedules.crontab.__init__),
    (schedule.__init__, celery.schedules.schedule.__init__),
], ids=["crontab", "schedule"])
def test_signature_matches_celery(ours: Any, theirs: Any) -> None:
    def shape(func: Any) -> list[tuple[str, Any, Any]]:
        params = inspect.signature(func).parameters.values()
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(ours) == shape(theirs)


def test_crontab_positional_order_is_celerys() -> None:
    args = ("0", "3", "mon-fri", "1-7", "jan")
    assert our_fields(crontab(*args)) == {
        name: set(getattr(celery.schedules.crontab(*args), name)) for name in CRON_FIELDS}
    cron = crontab(*args)
    assert cron.day_of_week == {1, 2, 3, 4, 5} and cron.day_of_month == set(range(1, 8))


def test_crontab_accepts_celerys_extra_keywords_and_refuses_others() -> None:
    assert crontab(minute=0, nowfun=lambda: utc(2026, 1, 1), app=None) == crontab(minute=0)
    with pytest.raises(ScheduleError, match="day_of_month"):
        crontab(minute=0, day=1)


@pytest.mark.parametrize("text", [
    "0 0 * * *", "*/15 9-17 * * mon-fri", "30 2 1 jan,jul *", "0 0 13 * fri", "5 4 * * 0",
    "1-10/3 22-2 29 2 *",
])
def test_from_string_matches_celery(text: str) -> None:
    fields = celery_from_string_fields(text)
    assert our_fields(crontab.from_string(text)) == celery_fields(**fields)
    assert crontab.from_string(text) == crontab(**fields)


def test_from_string_field_order() -> None:
    cron = crontab.from_string("1 2 3 4 5")  # minute hour day_of_month month_of_year dow
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        {1}, {2}, {3}, {4}, {5})


@pytest.mark.parametrize("text", ["0 0 * *", "0 0 * * * *", ""])
def test_from_string_needs_five_fields(text: str) -> None:
    with pytest.raises(ScheduleError, match="five fields"):
        crontab.from_string(text)


# -- schedule (intervals) ------------------------------------------------------------------
ANCHOR = utc(2026, 1, 1, 10, 17, 42)


@pytest.mark.parametrize("every", [30, 30.0, timedelta(seconds=30)], ids=["int", "float", "td"])
def test_schedule_first_fire_is_anchor_plus_interval(every: Any) -> None:
    tz = ZoneInfo("UTC")
    s = schedule(every)
    assert s.run_every == timedelta(seconds=30) and s.seconds == 30.0
    assert s.next_after(ANCHOR, tz, ANCHOR) == ANCHOR + timedelta(seconds=30)
    # Before the anchor too: the first fire is still anchor + interval.
    assert s.next_after(ANCHOR - timedelta(hours=1), tz, ANCHOR) == ANCHOR + timedelta(seconds=30)


def test_schedule_later_fires_stay_on_the_anchor_grid() -> None:
    tz, every = ZoneInfo("UTC"), timedelta(minutes=5)
    s = schedule(every)
    first = ANCHOR + every
    assert s.next_after(first, tz, ANCHOR) == first + every  # strictly after
    assert s.next_after(first - timedelta(microseconds=1), tz, ANCHOR) == first
    assert s.next_after(first + timedelta(microseconds=1), tz, ANCHOR) == first + every
    # Late by hours (a worker was down): the next grid point, not anchor-relative drift.
    late = first + timedelta(hours=3, seconds=7)
    assert s.next_after(late, tz, ANCHOR) == ANCHOR + every * 38
    # Iterating walks the grid one interval at a time.
    after, fires = ANCHOR, []
    for _ in range(5):
        nxt = s.next_after(after, tz, ANCHOR)
        assert nxt is not None
        fires.append(nxt)
        after = nxt
    assert fires == [ANCHOR + every * k for k in range(1, 6)]


@pytest.mark.parametrize("every", [1, 7, 30, 3600, 86400 * 7, timedelta(minutes=5)], ids=str)
def test_schedule_grid_property(every: Any) -> None:
    s, tz = schedule(every), ZoneInfo("UTC")
    step = s.run_every
    for k in (1, 2, 10, 12345):
        for delta in (timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)):
            after = ANCHOR + step * k + delta
            nxt = s.next_after(after, tz, ANCHOR)
            assert nxt is not None
            assert after < nxt <= after + step
            assert (nxt - ANCHOR) % step == timedelta(0)


def test_schedule_fractional_interval_just_before_a_grid_point() -> None:
    """Intervals that are not binary-exact (0.1 s) keep every grid point."""
    s, start = schedule(0.1), utc(2026, 1, 1)
    grid_point = start + timedelta(seconds=0.2)  # the second fire
    assert s.next_after(grid_point - timedelta(microseconds=1), ZoneInfo("UTC"),
                        start) == grid_point


def test_schedule_is_real_time_across_dst() -> None:
    s, anchor = schedule(timedelta(hours=1)), utc(2026, 3, 8, 5, 30)
    assert s.next_after(utc(2026, 3, 8, 7, 0), ZoneInfo(NY), anchor) == utc(2026, 3, 8, 7, 30)


def test_schedule_relative_hours_start_at_the_hour() -> None:
    s, tz = schedule(timedelta(hours=1), relative=True), ZoneInfo("UTC")
    assert s.next_after(ANCHOR, tz, ANCHOR) == utc(2026, 1, 1, 11)
    assert s.next_after(utc(2026, 1, 1, 11), tz, ANCHOR) == utc(2026, 1, 1, 12)
    assert s.next_after(utc(2026, 1, 1, 12, 59), tz, ANCHOR) == utc(2026, 1, 1, 13)


def test_schedule_relative_minutes_start_at_the_minute() -> None:
    s, tz = schedule(300, relative=True), ZoneInfo("UTC")
    assert s.next_after(ANCHOR, tz, ANCHOR) == utc(2026, 1, 1, 10, 22)
    assert s.next_after(utc(2026, 1, 1, 10, 22), tz, ANCHOR) == utc(2026, 1, 1, 10, 27)


def test_schedule_relative_days_start_at_local_midnight() -> None:
    s = schedule(timedelta(days=1), relative=True)
    # 10:17 UTC is 19:17 in Seoul; local midnight of that day is 15:00 UTC the day before.
    assert s.next_after(ANCHOR, ZoneInfo(SEOUL), ANCHOR) == utc(2026, 1, 1, 15)
    assert s.next_after(utc(2026, 1, 1, 15), ZoneInfo(SEOUL), ANCHOR) == utc(2026, 1, 2, 15)
    assert s.next_after(ANCHOR, ZoneInfo("UTC"), ANCHOR) == utc(2026, 1, 2)


def test_schedule_relative_below_a_minute_is_not_rounded() -> None:
    s = schedule(30, relative=True)
    assert s.next_after(ANCHOR, ZoneInfo("UTC"), ANCHOR) == ANCHOR + timedelta(seconds=30)


def test_schedule_equality_and_key() -> None:
    assert schedule(60) == schedule(timedelta(minutes=1)) == parse({"minutes": 1})
    assert schedule(60) != schedule(60, relative=True)
    assert hash(schedule(60)) == hash(schedule(60.0))
    assert schedule(60) != crontab()


@pytest.mark.parametrize("every", [0, -1, timedelta(0), timedelta(seconds=-5)], ids=repr)
def test_schedule_refuses_non_positive(every: Any) -> None:
    with pytest.raises(ScheduleError, match="positive"):
        schedule(every)


@pytest.mark.parametrize("every", [None, "30", True, [30]], ids=repr)
def test_schedule_refuses_other_types(every: Any) -> None:
    with pytest.raises(ScheduleError, match="seconds or a timedelta"):
        schedule(every)


# -- parse ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    (30, schedule(30)),
    (2.5, schedule(2.5)),
    (timedelta(minutes=2), schedule(120)),
    ({"minutes": 5}, schedule(300)),
    ({"hours": 1, "minutes": 30}, schedule(5400)),
    ({"weeks": 1, "days": 1, "seconds": 0.5}, schedule(timedelta(days=8, seconds=0.5))),
    ({"hours": 1, "relative": True}, schedule(3600, relative=True)),
    ({"crontab": {"minute": "0", "hour": "0"}}, crontab(minute=0, hour=0)),
    ({"crontab": "*/5 * * * *"}, crontab(minute="*/5")),
    ({"crontab": "0 9 * * mon-fri"}, crontab(minute=0, hour=9, day_of_week="1-5")),
    ({"crontab": {}}, crontab()),
], ids=["int", "float", "timedelta", "minutes", "hours-minutes", "weeks-days-seconds",
        "relative", "crontab-table", "crontab-string", "crontab-string-names", "crontab-empty"])
def test_parse_valid(value: Any, expected: BaseSchedule) -> None:
    parsed = parse(value)
    assert parsed == expected
    assert type(parsed) is type(expected)


def test_parse_returns_schedule_objects_unchanged() -> None:
    cron = crontab(minute=0)
    assert parse(cron) is cron


@pytest.mark.parametrize("value", [
    schedule(45), schedule(3600, relative=True), crontab(minute="*/15", hour="9-17"),
    crontab(minute=[0, 30], day_of_week="sat-sun", month_of_year="jan"),
], ids=["interval", "relative", "crontab", "crontab-list"])
def test_describe_round_trips_through_parse(value: BaseSchedule) -> None:
    assert parse(value.describe()) == value


@pytest.mark.parametrize("fields", [
    {"minute": "*/15"},
    {"minute": "1-10/3", "hour": "22-2"},
    {"minute": "0,30", "hour": "*/4"},
    {"hour": "22-4/2"},
    {"day_of_week": "mon-fri"},
    {"day_of_week": "sat-sun"},
    {"day_of_week": "monday,Wednesday,FRI"},
    {"day_of_week": "fri-tue"},
    {"day_of_month": "*/3", "month_of_year": "*/2"},
    {"day_of_month": "28-3"},
    {"month_of_year": "jan,dec"},
    {"month_of_year": "nov-feb"},
    {"month_of_year": "2-12/2"},
    {"minute": 7, "hour": [1, 2], "day_of_week": {0, 6}},
    {"minute": "05", "day_of_month": "1,15,31"},
], ids=lambda fields: ",".join(f"{k}={v}" for k, v in fields.items()))
def test_parsed_fields_match_celery(fields: dict[str, Any]) -> None:
    assert our_fields(crontab(**fields)) == celery_fields(**fields)
    spec = {name: value if isinstance(value, str | int) else ",".join(map(str, sorted(value)))
            for name, value in fields.items()}
    assert our_fields(parse({"crontab": spec})) == celery_fields(**fields)


INVALID = [
    ({"minutes": 5, "every": 1}, r"unknown schedule key.*'every'"),
    ({"crontab": {"minute": "0"}, "minutes": 5}, r"only the 'crontab' key"),
    ({"crontab": {"day": "1"}}, r"'day' \(Celery's is 'day_of_month'\)"),
    ({"crontab": {"month": "1"}}, r"'month' \(Celery's is 'month_of_year'\)"),
    ({"crontab": {"dow": "1"}}, r"'dow' \(Celery's is 'day_of_week'\)"),
    ({"crontab": {"second": "0"}}, r"'second' not in Celery's crontab"),
    ({"crontab": {"minute": "61"}}, r"minute value 61 is out of range 0-59"),
    ({"crontab": {"hour": "24"}}, r"hour value 24 is out of range 0-23"),
    ({"crontab": {"hour": 24}}, r"hour value 24 is out of range 0-23"),
    ({"crontab": {"day_of_month": "0"}}, r"day_of_month value 0 is out of range 1-31"),
    ({"crontab": {"month_of_year": "13"}}, r"month_of_year value 13 is out of range 1-12"),
    ({"crontab": {"day_of_week": "7"}}, r"day_of_week value 7 is out of range 0-6"),
    ({"crontab": {"day_of_week": "funday"}}, r"'funday' is not a day"),
    ({"crontab": {"day_of_week": "mo"}}, r"'mo' is not a day"),
    ({"crontab": {"month_of_year": "foo"}}, r"'foo' is not a month"),
    ({"crontab": {"minute": "a-b"}}, r"'a' is not a number in 0-59"),
    ({"crontab": {"hour": "*/0"}}, r"bad step '0'"),
    ({"crontab": {"minute": "*/x"}}, r"bad step 'x'"),
    ({"crontab": {"minute": "5/15"}}, r"a step needs '\*' or a range"),
    ({"crontab": {"minute": "*/"}}, r"cannot read"),
    ({"crontab": {"minute": "1,,2"}}, r"cannot read ''"),
    ({"crontab": {"minute": ""}}, r"cannot read ''"),
    ({"crontab": {"minute": "1-"}}, r"cannot read '1-'"),
    ({"crontab": {"minute": "1-5-7"}}, r"cannot read '1-5-7'"),
    ({"crontab": {"minute": "-1"}}, r"cannot read '-1'"),
    ({"crontab": {"minute": -1}}, r"minute value -1 is out of range"),
    ({"crontab": {"minute": [0, 60]}}, r"minute value 60 is out of range"),
    ({"crontab": {"minute": []}}, r"selects nothing"),
    ({"crontab": {"day_of_month": "30", "month_of_year": "2"}}, r"can never fire"),
    ({"crontab": {"day_of_month": "31", "month_of_year": "apr,jun,sep,nov"}}, r"can never fire"),
    ({"crontab": "0 0 * *"}, r"five fields"),
    ({"crontab": 5}, r"table of fields or a string"),
    ({"crontab": {"minute": True}}, r"minute cannot be True"),
    ({"crontab": {"minute": 5.0}}, r"minute must be text or an integer"),
    ({"crontab": {"minute": ["1"]}}, r"minute values must be integers"),
    ("*/5 * * * *", r"not str"),
    ([1, 2], r"not list"),
    (None, r"not NoneType"),
    (True, r"not True"),
    (False, r"not False"),
    (0, r"must be positive"),
    (-5, r"must be positive"),
    (timedelta(0), r"must be positive"),
    ({"minutes": 0}, r"must be positive"),
    ({"minutes": -1}, r"must be positive"),
    ({}, r"must be positive"),
    ({"minutes": "5"}, r"minutes must be a number"),
    ({"minutes": True}, r"minutes must be a number"),
    ({"minutes": 1, "relative": "yes"}, r"relative must be true or false"),
]


@pytest.mark.parametrize(("value", "message"), INVALID, ids=[repr(v) for v, _ in INVALID])
def test_parse_invalid(value: Any, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse(value)


def test_schedule_error_is_a_config_error_and_a_value_error() -> None:
    assert issubclass(ScheduleError, ImproperlyConfigured)
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize("value", [
    {"crontab": {"minute": "\u00b2"}},  # str.isdigit() is true, int() refuses it
    {"seconds": float("nan")},  # TOML has nan and inf
    {"seconds": float("inf")},
    {"days": 10**10},
], ids=["superscript-digit", "nan", "inf", "huge"])
def test_parse_refuses_non_ascii_digits_nan_inf_and_overflow(value: Any) -> None:
    with pytest.raises(ScheduleError):
        parse(value)


@pytest.mark.parametrize("fields", [
    {"minute": "61"}, {"day_of_week": "funday"}, {"hour": "*/0"}, {"minute": "5/15"},
    {"minute": "1,,2"}, {"minute": "-1"}, {"day_of_month": "30", "month_of_year": "2"},
], ids=lambda fields: ",".join(f"{k}={v}" for k, v in fields.items()))
def test_invalid_fields_celery_refuses_too(fields: dict[str, str]) -> None:
    with pytest.raises(ScheduleError):
        crontab(**fields)
    with pytest.raises((ValueError, celery.schedules.ParseException)):
        celery.schedules.crontab(**fields)
