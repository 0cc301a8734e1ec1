"""Settings from defaults, TOML, environment and overrides, in that order."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from asyncworker import settings as settings_mod
from asyncworker.backends import normalize_url
from asyncworker.beat import BeatSettings
from asyncworker.contrib.vision import VisionSettings
from asyncworker.events import EventsSettings
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.logging import redact_text, redact_url

REPO = Path(__file__).resolve().parents[2]
#: The sections of the plugins shipped in asyncworker.contrib.
SHIPPED_SECTIONS = [BeatSettings, EventsSettings, VisionSettings]


def test_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('worker_concurrency = 7\ntask_acks_late = true\naccept_content = ["json"]\n')
    env = {"ASYNCWORKER_WORKER_CONCURRENCY": "9", "ASYNCWORKER_RESULT_EXTENDED": "yes",
           "ASYNCWORKER_WORKER_QUEUES": "a,b", "OTHER": "x"}
    s = settings_mod.load(path, overrides={"worker_prefetch_multiplier": 2}, environ=env)
    assert s.worker_concurrency == 9 and s.task_acks_late is True
    assert s.result_extended is True and s.worker_queues == ["a", "b"]
    assert s.worker_prefetch_multiplier == 2 and s.prefetch_count() == 18


def test_json_values_from_env() -> None:
    env = {"ASYNCWORKER_TASK_QUEUES": '{"q": {"exchange": "x", "routing_key": "r"}}',
           "ASYNCWORKER_RESULT_BACKEND": "none"}
    s = settings_mod.load(environ=env)
    assert s.task_queues == {"q": {"exchange": "x", "routing_key": "r"}}
    assert s.result_backend is None


@pytest.mark.parametrize(("content", "match"), [
    ("worker_concurency = 3", "unknown setting"),
    ("worker_concurrency = 'many'", "invalid value"),
    ("task_acks_late = 'perhaps'", "invalid value"),
    ("not toml [", "cannot read"),
])
def test_bad_config_is_reported(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ImproperlyConfigured, match=match):
        settings_mod.load(path, environ={})


def test_shipped_configs_load() -> None:
    for name in ("default.toml", "vision_analysis.toml"):
        settings_mod.load(REPO / "config" / name, environ={}, sections=SHIPPED_SECTIONS)
    with pytest.raises(ImproperlyConfigured, match="unknown setting 'vision'"):
        settings_mod.load(REPO / "config" / "default.toml", environ={},  # no vision plugin
                          sections=[BeatSettings, EventsSettings])


@pytest.mark.parametrize(("url", "expected"), [
    ("db+postgresql://u:p@h/db", ("postgresql", "postgresql://u:p@h/db")),
    ("db+postgresql+psycopg2://u:p@h:5/db", ("postgresql", "postgresql://u:p@h:5/db")),
    ("postgres://h/db", ("postgresql", "postgresql://h/db")),
    ("redis://h:6379/0", ("redis", "redis://h:6379/0")),
])
def test_backend_urls(url: str, expected: tuple[str, str]) -> None:
    assert normalize_url(url) == expected


def test_unsupported_backend_url() -> None:
    with pytest.raises(ImproperlyConfigured):
        normalize_url("mongodb://h/db")


def test_redaction() -> None:
    assert redact_url("amqp://guest:secret@host:5672//") == "amqp://guest:***@host:5672//"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    text = "failed db+postgresql://u:hunter2@db/x and amqp://a:b@c//"
    assert "hunter2" not in redact_text(text) and ":b@" not in redact_text(text)


def test_event_loop_choice() -> None:
    import asyncio

    from asyncworker.cli import loop_factory

    assert loop_factory("asyncio") is None
    factory = loop_factory("uvloop")  # installed with the test extras
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
    with pytest.raises(ImproperlyConfigured, match="'asyncio' or 'uvloop'"):
        loop_factory("trio")


def test_default_toml_lists_every_setting() -> None:
    """Core settings at the top level, each shipped section's keys under its table."""
    import re

    text = (REPO / "config" / "default.toml").read_text()
    core, *tables = re.split(r"^\[([a-z_0-9]+)\]\s*$", text, flags=re.MULTILINE)
    sections = dict(zip(tables[::2], tables[1::2], strict=True))

    def listed(part: str) -> set[str]:
        return set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", part, re.MULTILINE))

    expected = {"": (core, settings_mod.Settings.field_names())}
    for kind in SHIPPED_SECTIONS:
        assert kind.section in sections, f"config/default.toml has no [{kind.section}] table"
        expected[kind.section] = (sections[kind.section], [f.name for f in fields(kind)])
    for table, (part, names) in expected.items():
        missing = set(names) - listed(part)
        assert not missing, f"config/default.toml [{table}] does not list {sorted(missing)}"
