"""The command line: built-in subcommands, plugins' subcommands, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import asyncworker
from asyncworker import App
from asyncworker.cli import BUILTIN_COMMANDS, build_parser, load_app, main
from asyncworker.cli.registry import Registry
from asyncworker.exceptions import ImproperlyConfigured
from asyncworker.plugins import CliCommand, Plugin
from asyncworker.settings import Section

REPO = Path(__file__).resolve().parents[2]
HERE = __name__


@dataclass(slots=True)
class GreetSettings(Section):
    section: ClassVar[str] = "greet"
    greeting: str = "hello"


class Greet(CliCommand):
    name = "greet"
    help = "print a greeting"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("who")

    def run(self, args: argparse.Namespace) -> int:
        settings = load_app(args.app).settings.section(GreetSettings)
        print(f"{settings.greeting}, {args.who}")
        return 3


class GreetPlugin(Plugin):
    name = "greet"
    settings = GreetSettings

    def cli_commands(self) -> list[CliCommand]:
        return [Greet()]


class Worker(CliCommand):
    name = "worker"


class Hijack(Plugin):
    name = "hijack"

    def cli_commands(self) -> list[CliCommand]:
        return [Worker()]


app = App("cli-test", broker_url="amqp://u:secret@127.0.0.1:1//")
app.use(GreetPlugin())
bare = App("cli-bare")   # gets GreetPlugin only from worker_plugins
misconfigured = App("cli-misconfigured")  # --config sticks to an App: one for the bad file
misconfigured.use(GreetPlugin())
hijacked = App("cli-hijacked")
hijacked.use(Hijack())
not_an_app = object()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ASYNCWORKER_"):
            monkeypatch.delenv(key)


def test_builtin_subcommands() -> None:
    assert [c.name for c in BUILTIN_COMMANDS] == ["worker", "beat", "dlq", "config", "ping"]
    parser = build_parser(["worker"])
    args = parser.parse_args(["worker", "-A", "m:a", "-Q", "a,b", "-c", "5", "--config", "f",
                              "--prefetch-multiplier", "2", "-n", "w@%h", "-l", "DEBUG"])
    assert (args.app, args.queues, args.concurrency, args.config) == ("m:a", "a,b", 5, "f")
    assert (args.prefetch_multiplier, args.hostname, args.loglevel) == (2, "w@%h", "DEBUG")
    args = parser.parse_args(["dlq", "replay", "q", "--limit", "3"])
    assert (args.action, args.queue, args.limit, args.app) == ("replay", "q", 3,
                                                               "asyncworker.tasks:app")


def test_a_plugins_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["greet", "-A", f"{HERE}:app", "world"]) == 3
    assert capsys.readouterr().out == "hello, world\n"
    assert "greet" in build_parser(["-A", f"{HERE}:app"]).format_help()
    assert "greet" not in build_parser(["worker", "-A", f"{HERE}:app"]).format_help()


def test_a_subcommand_of_a_plugin_enabled_by_settings(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'worker_plugins = ["{HERE}:GreetPlugin"]\n[greet]\ngreeting = "hi"\n')
    assert main(["greet", "-A", f"{HERE}:bare", "--config", str(config), "you"]) == 3
    assert capsys.readouterr().out == "hi, you\n"


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["greet", "-A", f"{HERE}:not_an_app", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "plugin subcommands unavailable" in err and "is not an asyncworker App" in err
    assert "invalid choice: 'greet'" in err


def test_version_loads_no_app(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``--version`` answers even when the settings could not be read."""
    monkeypatch.setenv("ASYNCWORKER_CONFIG", "/nonexistent/asyncworker.toml")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out, err = capsys.readouterr()
    assert out == f"asyncworker {asyncworker.__version__}\n" and not err


def test_a_plugin_cannot_take_a_builtin_name() -> None:
    registry = Registry(BUILTIN_COMMANDS)
    with pytest.raises(ImproperlyConfigured, match="two subcommands named 'worker'"):
        registry.add(Worker())
    registry.add(type(BUILTIN_COMMANDS[0])())  # the same command again is harmless
    assert len(registry.commands) == len(BUILTIN_COMMANDS)


def test_configuration_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "-A", "no.such.module:app"]) == 2
    assert "No module named 'no'" in capsys.readouterr().err
    assert main(["worker", "-A", f"{HERE}:not_an_app"]) == 2
    assert "is not an asyncworker App" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("greeting = 3\n")
    assert main(["config", "-A", f"{HERE}:misconfigured", "--config", str(bad)]) == 2
    assert "invalid value 3 for greeting" in capsys.readouterr().err


def test_dlq_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The broker of this app is a closed port: the error is printed, status 1."""
    assert main(["dlq", "list", "q", "-A", f"{HERE}:app"]) == 1
    assert capsys.readouterr().err.startswith("asyncworker dlq: ")


def test_config_prints_effective_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "-A", f"{HERE}:app"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["app"] == f"{HERE}:app"
    assert report["plugins"] == ["beat", "events", "monitoring", "worker_lost", "parked", "greet"]
    assert report["sources"] == ["App('cli-test')", "environment"]
    assert report["settings"]["broker_url"] == "amqp://u:***@127.0.0.1:1//"
    assert report["settings"]["greet"] == {"greeting": "hello"}


def test_python_m_asyncworker(tmp_path: Path) -> None:
    """``python -m asyncworker config`` from another directory: the packaged default config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "asyncworker", "config"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stdout)
    assert report["plugins"] == ["beat", "events", "monitoring", "worker_lost", "parked", "vision"]
    assert report["sources"][1].endswith("asyncworker/contrib/vision/vision_analysis.toml")
    assert "vision_analysis" in report["settings"]["task_queues"]
    assert report["settings"]["vision"]["gpt_model"] == "gpt-5"
