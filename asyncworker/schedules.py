"""Celery's periodic schedules: ``schedule`` (an interval) and ``crontab``.

The signatures and the crontab syntax are Celery's, so a ``beat_schedule``
written for Celery works unchanged::

    from asyncworker.schedules import crontab, schedule

    beat_schedule = {
        "backup": {"task": "tasks.backup", "schedule": crontab(minute=0, hour=0)},
        "health": {"task": "tasks.health", "schedule": 300.0},
    }

In TOML, a schedule is a number of seconds, an interval table (``{ minutes =
5 }``) or ``{ crontab = { minute = "0", hour = "0" } }`` (or a five-field
string, ``{ crontab = "0 0 * * *" }``); :func:`parse` reads all of these.

Celery's crontab semantics differ from classic cron and from APScheduler's
``CronTrigger`` field names: Sunday is 0 in ``day_of_week``, and
``day_of_week`` and ``day_of_month`` must *both* match. APScheduler's triggers
do the calendar arithmetic; this module translates the fields and applies
Celery's rules for daylight-saving changes (see :meth:`crontab.next_after`).

Anything that is not exactly Celery's syntax is refused with a
:class:`ScheduleError` rather than interpreted: unknown field names, values
out of range, day names that are not day names, and crontabs that can never
fire.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from .exceptions import ImproperlyConfigured

__all__ = ["BaseSchedule", "ScheduleError", "crontab", "parse", "schedule"]

Cronspec = int | str | Iterable[int]

_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
# The most days each month can have (February in a leap year).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
# Names people bring from other schedulers, with Celery's name for them.
_FOREIGN_FIELDS = {"day": "day_of_month", "month": "month_of_year", "dow": "day_of_week",
                   "weekday": "day_of_week", "second": None, "year": None, "week": None}
_PART = re.compile(r"^(?:(?P<star>\*)|(?P<start>\w+)(?:-(?P<end>\w+))?)(?:/(?P<step>\w+))?$")
_MINUTE = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)


class ScheduleError(ImproperlyConfigured, ValueError):
    """A schedule Celery would not accept, or one that can never fire."""


class BaseSchedule:
    """What the scheduler asks of a schedule."""

    def next_after(self, after: datetime, tz: tzinfo, anchor: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware, UTC), or None.

        ``tz`` is the configured timezone; ``anchor`` is when the entry was
        first scheduled (intervals count from it).
        """
        raise NotImplementedError

    def key(self) -> tuple[Any, ...]:
        """Equal for schedules that fire at the same times (used to share work)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The schedule as TOML-able data, the form :func:`parse` reads back."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseSchedule) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())


class schedule(BaseSchedule):
    """Every ``run_every`` (seconds or a ``timedelta``), Celery's signature.

    The first fire is ``run_every`` after the entry is first scheduled, then
    one every ``run_every`` on that grid (real time, unaffected by DST). With
    ``relative=True`` the grid starts at the start of the interval's unit
    (the day, hour or minute, in the configured timezone), as Celery rounds
    relative schedules to the interval's resolution. ``nowfun`` and ``app``
    are accepted for compatibility and unused.
    """

    def __init__(self, run_every: float | timedelta | None = None, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        if isinstance(run_every, bool) or not isinstance(run_every, (int, float, timedelta)):
            raise ScheduleError(f"an interval is seconds or a timedelta, not {run_every!r}")
        try:
            every = (run_every if isinstance(run_every, timedelta)
                     else timedelta(seconds=run_every))
        except (ValueError, OverflowError) as exc:  # nan, inf, too large
            raise ScheduleError(f"invalid interval {run_every!r}: {exc}") from None
        if every <= timedelta(0):
            raise ScheduleError(f"an interval must be positive, not {every}")
        self.run_every = every
        self.relative = bool(relative)

    @property
    def seconds(self) -> float:
        """The interval in seconds."""
        return self.run_every.total_seconds()

    def start(self, anchor: datetime, tz: tzinfo) -> datetime:
        """Where the grid starts for an entry first scheduled at ``anchor``."""
        if not self.relative:
            return anchor
        local = anchor.astimezone(tz)
        if self.run_every >= timedelta(days=1):
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        elif self.run_every >= timedelta(hours=1):
            local = local.replace(minute=0, second=0, microsecond=0)
        elif self.run_every >= _MINUTE:
            local = local.replace(second=0, microsecond=0)
        return local.astimezone(UTC)

    def next_after(self, after: datetime, tz: tzinfo, anchor: datetime) -> datetime | None:
        # Whole microseconds, not APScheduler's IntervalTrigger: its float
        # division skips a grid point for intervals like 0.1 s.
        first = self.start(anchor, tz) + self.run_every
        if after < first:
            return first
        step = self.run_every // _MICROSECOND
        return first + ((after - first) // _MICROSECOND // step + 1) * self.run_every

    def key(self) -> tuple[Any, ...]:
        return ("interval", self.seconds, self.relative)

    def describe(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seconds": self.seconds}
        if self.relative:
            data["relative"] = True
        return data

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"


class crontab(BaseSchedule):
    """A Celery crontab: ``crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")``.

    Each field takes an int, a set or list of ints, or text in Celery's
    syntax: ``*``, ``*/15``, ``1-5``, ``1-10/2``, ``0,30``, day names
    (``mon``, ``monday``) in ``day_of_week`` and month names (``jan``) in
    ``month_of_year``. Ranges may wrap (``sat-sun``). Sunday is 0; a day must
    match both ``day_of_week`` and ``day_of_month``.
    """

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*",
                 day_of_week: Cronspec = "*", day_of_month: Cronspec = "*",
                 month_of_year: Cronspec = "*", **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - {"nowfun", "app"})
        if unknown:
            raise ScheduleError(_unknown_fields(unknown))
        self.minute = _field(minute, "minute", 0, 59)
        self.hour = _field(hour, "hour", 0, 23)
        self.day_of_week = _field(day_of_week, "day_of_week", 0, 6, names=_DAYS)
        self.day_of_month = _field(day_of_month, "day_of_month", 1, 31)
        self.month_of_year = _field(month_of_year, "month_of_year", 1, 12, names=_MONTHS)
        if not any(day <= _MONTH_DAYS[month - 1]
                   for month in self.month_of_year for day in self.day_of_month):
            raise ScheduleError(
                f"crontab can never fire: no day {_spec(day_of_month)} in month(s) "
                f"{_spec(month_of_year)}")
        self._trigger = _trigger(self.minute, self.hour, self.day_of_week, self.day_of_month,
                                 self.month_of_year)
        self._key = ("crontab", *(tuple(sorted(getattr(self, name))) for name in _CRON_FIELDS))
        self._fields = {"minute": minute, "hour": hour, "day_of_week": day_of_week,
                        "day_of_month": day_of_month, "month_of_year": month_of_year}

    @classmethod
    def from_string(cls, text: str) -> crontab:
        """``"minute hour day_of_month month_of_year day_of_week"``, cron's field order."""
        parts = text.split()
        if len(parts) != 5:
            raise ScheduleError(f"a crontab string has five fields, not {text!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def next_after(self, after: datetime, tz: tzinfo, anchor: datetime) -> datetime | None:
        """The first fire strictly after ``after``, Celery's way.

        The next matching wall-clock minute in ``tz`` after ``after``'s wall
        time is made real as Celery makes it (``fold=0``): a minute inside a
        skipped hour (spring forward) fires at the same offset before the
        change, i.e. an hour later on the clock, once; a minute in a repeated
        hour (fall back) fires at its first occurrence only. A wall time that
        would land at or before ``after`` is passed over; that is the one
        difference from Celery, which asked from inside a repeated hour's
        second pass returns times before it.
        """
        wall = after.astimezone(tz).replace(tzinfo=None)
        for _ in range(2000):  # a repeated hour passes over at most 60 minutes
            start = wall.replace(second=0, microsecond=0) + _MINUTE
            found: datetime | None = self._trigger.get_next_fire_time(
                None, start.replace(tzinfo=UTC))
            if found is None:
                return None
            wall = found.replace(tzinfo=None)
            real = wall.replace(tzinfo=tz).astimezone(UTC)
            if real > after:
                return real
        return None

    def key(self) -> tuple[Any, ...]:
        return self._key

    def describe(self) -> dict[str, Any]:
        return {"crontab": {name: _spec(value) for name, value in self._fields.items()}}

    def __repr__(self) -> str:
        return ("<crontab: {minute} {hour} {day_of_week} {day_of_month} {month_of_year} "
                "(m/h/dow/dom/moy)>").format(**{k: _spec(v) for k, v in self._fields.items()})


def parse(value: Any) -> BaseSchedule:
    """A schedule from a ``beat_schedule`` entry's ``schedule`` value.

    Accepts a schedule object, seconds (int or float), a ``timedelta``, an
    interval table of ``weeks``/``days``/``hours``/``minutes``/``seconds``
    (and ``relative``), or ``{"crontab": {...fields...}}`` /
    ``{"crontab": "m h dom mon dow"}``.
    """
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, bool):
        raise ScheduleError(f"schedule must be seconds, an interval or a crontab, not {value!r}")
    if isinstance(value, (int, float, timedelta)):
        return schedule(value)
    if not isinstance(value, Mapping):
        raise ScheduleError("schedule must be seconds, an interval table or a crontab table, "
                            f"not {type(value).__name__} {value!r}")
    if "crontab" in value:
        if len(value) != 1:
            raise ScheduleError(f"a crontab schedule has only the 'crontab' key, not "
                                f"{sorted(value)}")
        fields = value["crontab"]
        if isinstance(fields, str):
            return crontab.from_string(fields)
        if not isinstance(fields, Mapping):
            raise ScheduleError(f"crontab must be a table of fields or a string, not {fields!r}")
        unknown = sorted(set(fields) - set(_CRON_FIELDS))
        if unknown:
            raise ScheduleError(_unknown_fields(unknown))
        return crontab(**fields)
    unknown = sorted(set(value) - {*_INTERVAL_UNITS, "relative"})
    if unknown:
        raise ScheduleError(f"unknown schedule key(s) {unknown}: an interval has "
                            f"{list(_INTERVAL_UNITS)}, a crontab is {{crontab = {{...}}}}")
    units = {}
    for unit in _INTERVAL_UNITS:
        amount = value.get(unit, 0)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ScheduleError(f"interval {unit} must be a number, not {amount!r}")
        units[unit] = amount
    relative = value.get("relative", False)
    if not isinstance(relative, bool):
        raise ScheduleError(f"interval relative must be true or false, not {relative!r}")
    try:
        every = timedelta(**units)
    except (ValueError, OverflowError) as exc:  # nan, inf, too large
        raise ScheduleError(f"invalid interval {dict(value)!r}: {exc}") from None
    return schedule(every, relative=relative)


def _unknown_fields(names: Iterable[str]) -> str:
    hints = []
    for name in names:
        celery_name = _FOREIGN_FIELDS.get(name)
        hints.append(f"{name!r}" + (f" (Celery's is {celery_name!r})" if celery_name else ""))
    return (f"crontab field(s) {', '.join(hints)} not in Celery's crontab: "
            f"{', '.join(_CRON_FIELDS)}")


def _field(spec: Any, name: str, low: int, high: int,
           names: tuple[str, ...] = ()) -> frozenset[int]:
    """One crontab field's values, parsed with Celery's grammar and range-checked."""
    if isinstance(spec, bool):
        raise ScheduleError(f"crontab {name} cannot be {spec!r}")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = _parse_text(spec, name, low, high, names)
    elif isinstance(spec, Iterable):
        items = list(spec)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise ScheduleError(f"crontab {name} values must be integers: {items!r}")
        values = set(items)
    else:
        raise ScheduleError(f"crontab {name} must be text or an integer, not {spec!r}")
    if not values:
        raise ScheduleError(f"crontab {name} {spec!r} selects nothing")
    for v in values:
        if not low <= v <= high:
            raise ScheduleError(f"crontab {name} value {v} is out of range {low}-{high}")
    return frozenset(values)


def _parse_text(text: str, name: str, low: int, high: int,
                names: tuple[str, ...]) -> set[int]:
    values: set[int] = set()
    for part in text.strip().split(","):
        match = _PART.match(part.strip())
        if not match:
            raise ScheduleError(f"invalid crontab {name} {text!r}: cannot read {part!r}")
        if match["star"]:
            span = list(range(low, high + 1))
        else:
            start = _number(match["start"], name, low, high, names)
            end = start if match["end"] is None else _number(match["end"], name, low, high,
                                                             names)
            # Celery wraps a range whose end is before its start (sat-sun).
            span = (list(range(start, end + 1)) if end >= start
                    else [*range(start, high + 1), *range(low, end + 1)])
        if match["step"] is not None:
            if match["star"] is None and match["end"] is None:
                raise ScheduleError(f"invalid crontab {name} {text!r}: a step needs '*' or "
                                    f"a range ({part!r})")
            step = match["step"]
            if not step.isdecimal() or not step.isascii() or int(step) == 0:
                raise ScheduleError(f"invalid crontab {name} {text!r}: bad step {step!r}")
            span = span[::int(step)]
        values.update(span)
    return values


def _number(token: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token.isdecimal() and token.isascii():
        value = int(token)
        if not low <= value <= high:
            raise ScheduleError(f"crontab {name} value {value} is out of range {low}-{high}")
        return value
    word = token.lower()
    for index, full in enumerate(names):
        # "mon", "monday" and Celery's other prefixes of at least three letters.
        if len(word) >= 3 and full.startswith(word):
            return index + low
    kind = {_DAYS: "day", _MONTHS: "month"}.get(names, "number")
    raise ScheduleError(f"invalid crontab {name}: {token!r} is not a {kind}"
                        + ("" if names else f" in {low}-{high}"))


@functools.lru_cache(maxsize=1024)
def _trigger(minute: frozenset[int], hour: frozenset[int], day_of_week: frozenset[int],
             day_of_month: frozenset[int], month_of_year: frozenset[int]) -> CronTrigger:
    """APScheduler's trigger for these fields, in UTC (the wall clock); shared by equal
    crontabs, since building one costs far more than using it."""
    return CronTrigger(
        minute=_ranges(minute), hour=_ranges(hour), day=_ranges(day_of_month),
        month=_ranges(month_of_year),
        # APScheduler counts from Monday = 0, Celery from Sunday = 0.
        day_of_week=_ranges(frozenset((d - 1) % 7 for d in day_of_week)), timezone=UTC)


def _ranges(values: frozenset[int]) -> str:
    """``0-5,7,9-11``: runs as ranges (APScheduler compiles each part separately)."""
    parts: list[str] = []
    ordered = sorted(values)
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _join(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def _spec(value: Any) -> Any:
    """A field as given, in a form TOML and JSON can hold."""
    if isinstance(value, (str, int)):
        return value
    return _join(value)
