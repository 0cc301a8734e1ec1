"""``asyncworker beat``: ``--show``, refusing bad entries before connecting, ``beat entries``."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from asyncworker import App
from asyncworker.beat import cli as beat_cli
from asyncworker.cli import load_app, main

HERE = __name__
# Services on closed ports: nothing here may connect to them.
app = App("beat-cli", broker_url="amqp://guest:guest@127.0.0.1:1//",
          result_backend="db+postgresql://u:p@127.0.0.1:1/none")


@app.task(name="beat_cli.known", queue="known")
def known() -> None: ...


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ASYNCWORKER_"):
            monkeypatch.delenv(key)


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"beat-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(text)
    return str(path)


def show(capsys: pytest.CaptureFixture[str], path: str, *extra: str,
         target: str = f"{HERE}:app") -> list[dict[str, Any]]:
    assert main(["beat", "-A", target, "--config", path, "--show", *extra]) == 0
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()]


SCHEDULE = """
timezone = "America/New_York"

[beat.beat_schedule.every90]
task = "reports.refresh"
schedule = { minutes = 90 }

[beat.beat_schedule.nightly]
task = "reports.nightly"
schedule = { crontab = { minute = "30", hour = "2" } }
args = [1]

[beat.beat_schedule.lunch]
task = "beat_cli.known"
schedule = { crontab = "30 12 * * *" }

[beat.beat_schedule.weekdays]
task = "reports.weekly"
schedule = { crontab = { minute = 0, hour = 9, day_of_week = "mon-fri" } }
"""


@pytest.mark.parametrize("target", [f"{HERE}:app", "tests.apps.compat:app"])
def test_show_prints_the_next_fires_of_each_entry(tmp_path: Path, target: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Counted from noon in New York the day before the spring-forward change."""
    shared = load_app(target)
    for attribute in ("_config_override", "_settings", "_topology"):
        # --config sticks to the App: give a shared one its own settings back afterwards.
        monkeypatch.setattr(shared, attribute, getattr(shared, attribute))
    lines = show(capsys, config(tmp_path, SCHEDULE), "--count", "3",
                 "--now", "2026-03-07T12:00:00", target=target)
    assert lines == [
        {"entry": "every90", "task": "reports.refresh",
         "next": ["2026-03-07T13:30:00-05:00", "2026-03-07T15:00:00-05:00",
                  "2026-03-07T16:30:00-05:00"]},
        # 02:30 does not exist on 8 March: it fires an hour later on the clock, once.
        {"entry": "nightly", "task": "reports.nightly",
         "next": ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00",
                  "2026-03-10T02:30:00-04:00"]},
        {"entry": "lunch", "task": "beat_cli.known",
         "next": ["2026-03-07T12:30:00-05:00", "2026-03-08T12:30:00-04:00",
                  "2026-03-09T12:30:00-04:00"]},
        # 7 March 2026 is a Saturday.
        {"entry": "weekdays", "task": "reports.weekly",
         "next": ["2026-03-09T09:00:00-04:00", "2026-03-10T09:00:00-04:00",
                  "2026-03-11T09:00:00-04:00"]},
    ]


def test_show_with_an_offset_and_in_utc(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, """
[beat_schedule.often]
task = "t.often"
schedule = 45
[beat_schedule.hourly]
task = "t.hourly"
schedule = { crontab = { minute = "0,30" } }
""")
    lines = show(capsys, path, "--count", "2", "--now", "2026-03-07T12:10:00+01:00")
    assert lines == [
        {"entry": "often", "task": "t.often",
         "next": ["2026-03-07T11:10:45+00:00", "2026-03-07T11:11:30+00:00"]},
        {"entry": "hourly", "task": "t.hourly",
         "next": ["2026-03-07T11:30:00+00:00", "2026-03-07T12:00:00+00:00"]},
    ]


def test_show_counts_intervals_in_real_time_across_dst(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, """
timezone = "America/New_York"
[beat_schedule.twice_a_day]
task = "t.half"
schedule = { hours = 12 }
[beat_schedule.hourly]
task = "t.hourly"
schedule = 3600
""")
    lines = show(capsys, path, "--count", "4", "--now", "2026-03-08T00:30:00")
    assert lines == [
        {"entry": "twice_a_day", "task": "t.half",
         "next": ["2026-03-08T13:30:00-04:00", "2026-03-09T01:30:00-04:00",
                  "2026-03-09T13:30:00-04:00", "2026-03-10T01:30:00-04:00"]},
        {"entry": "hourly", "task": "t.hourly",
         "next": ["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00",
                  "2026-03-08T04:30:00-04:00", "2026-03-08T05:30:00-04:00"]},
    ]


def test_show_refuses_a_bad_now_or_timezone(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, SCHEDULE)
    assert main(["beat", "-A", f"{HERE}:app", "--config", path, "--show",
                 "--now", "tomorrow"]) == 2
    assert "--now is not an ISO 8601 time: 'tomorrow'" in capsys.readouterr().err
    path = config(tmp_path, 'timezone = "Mars/Olympus_Mons"\n')
    assert main(["beat", "-A", f"{HERE}:app", "--config", path, "--show"]) == 2
    assert "unknown timezone 'Mars/Olympus_Mons'" in capsys.readouterr().err


INVALID = {
    "unknown_key": ('task = "t.x"\nschedule = 60\nexpires = 10\n', "unknown key(s) ['expires']"),
    "cron_day": ('task = "t.x"\nschedule = { crontab = { day = "1" } }\n',
                 "'day' (Celery's is 'day_of_month')"),
    "minute_61": ('task = "t.x"\nschedule = { crontab = { minute = "61" } }\n',
                  "minute value 61 is out of range 0-59"),
    "funday": ('task = "t.x"\nschedule = { crontab = { day_of_week = "funday" } }\n',
               "'funday' is not a day"),
    "feb_30": ('task = "t.x"\n'
               'schedule = { crontab = { day_of_month = "30", month_of_year = "2" } }\n',
               "crontab can never fire"),
    "string": ('task = "t.x"\nschedule = "every 5 minutes"\n',
               "schedule must be seconds, an interval table or a crontab table"),
    "unroutable": ('task = "t.x"\nschedule = 60\noptions = { queue = "nowhere" }\n',
                   "queue 'nowhere' is not defined in task_queues"),
}


def invalid_config(tmp_path: Path, case: str) -> tuple[str, str]:
    entry, reason = INVALID[case]
    text = ("task_create_missing_queues = false\n"
            "[beat.beat_schedule.fine]\ntask = \"t.fine\"\nschedule = 30\n"
            f"[beat.beat_schedule.broken_{case}]\n{entry}")
    return config(tmp_path, text), reason


@pytest.fixture
def never_run(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records a scheduler start (which would connect) instead of starting one."""
    started: list[Any] = []

    async def run(app: Any) -> None:
        started.append(app)

    monkeypatch.setattr(beat_cli, "_run", run)
    return started


@pytest.mark.parametrize("mode", [["--show"], []], ids=["show", "run"])
@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_entry_exits_2_naming_it(tmp_path: Path, case: str, mode: list[str],
                                            never_run: list[Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path, reason = invalid_config(tmp_path, case)
    assert main(["beat", "-A", f"{HERE}:app", "--config", path, *mode]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"asyncworker: beat_schedule entry 'broken_{case}': " in captured.err
    assert reason in captured.err
    assert never_run == []


def test_a_valid_schedule_starts_the_scheduler(tmp_path: Path, never_run: list[Any]) -> None:
    """The counterpart of the refusals above: the same command gets as far as running."""
    path = config(tmp_path, "[beat.beat_schedule.fine]\ntask = \"t.fine\"\nschedule = 30\n")
    assert main(["beat", "-A", f"{HERE}:app", "--config", path]) == 0
    assert never_run == [app]


def store_config(tmp_path: Path, extra: str = "") -> str:
    return config(tmp_path, f'beat_store = "memory://beat-cli-{uuid.uuid4().hex}"\n'
                            '[beat.beat_schedule.static]\ntask = "t.static"\nschedule = 60\n'
                            + extra)


def entries(path: str, *argv: str) -> int:
    return main(["beat", "-A", f"{HERE}:app", "--config", path, "entries", *argv])


def test_entries_refuses_a_settings_entry(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = store_config(tmp_path)
    for argv in (["add", "static", "t.other", "--every", "5"],
                 ["add", "static", "t.other", "--every", "5", "--replace"],
                 ["remove", "static"], ["pause", "static"], ["resume", "static"]):
        assert entries(path, *argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == ("asyncworker: entry 'static' comes from the settings and is "
                                "read-only here\n")
    assert entries(path, "list") == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["entry"], listed["task"], listed["source"]) == ("static", "t.static",
                                                                   "settings")


def test_entries_add_list_pause_remove_with_a_memory_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = store_config(tmp_path)
    assert entries(path, "add", "db", "t.db", "--crontab", "*/5 * * * 1-5",
                   "--args", "[1]", "--options", '{"queue": "q"}') == 0
    assert json.loads(capsys.readouterr().out) == {"entry": "db", "done": "add"}
    assert entries(path, "add", "db", "t.db", "--every", "5") == 1
    assert "entry 'db' exists (use --replace)" in capsys.readouterr().err
    assert entries(path, "pause", "db") == 0
    capsys.readouterr()
    assert entries(path, "list") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["entry"], e["source"], e["enabled"]) for e in listed] == [
        ("static", "settings", True), ("db", "database", False)]
    assert listed[1]["schedule"] == {"crontab": {
        "minute": "*/5", "hour": "*", "day_of_week": "1-5", "day_of_month": "*",
        "month_of_year": "*"}}
    assert (listed[1]["args"], listed[1]["options"]) == ([1], {"queue": "q"})
    assert entries(path, "remove", "db") == 0
    assert entries(path, "remove", "db") == 1
    assert "no entry 'db' in the table" in capsys.readouterr().err


def test_entries_add_refuses_an_invalid_entry(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = store_config(tmp_path)
    assert entries(path, "add", "db", "t.db", "--crontab", "61 * * * *") == 2
    err = capsys.readouterr().err
    assert "beat_schedule entry 'db': " in err and "minute value 61" in err
    assert entries(path, "add", "db", "t.db", "--every", "5", "--options",
                   '{"task_id": "x"}') == 2
    assert "beat_schedule entry 'db': unknown option(s) ['task_id']" in capsys.readouterr().err
    assert entries(path, "list") == 0
    assert [json.loads(line)["entry"] for line in capsys.readouterr().out.splitlines()] == [
        "static"]
