"""``deploy/systemd/``: the units verified by systemd and their commands run.

``systemd-analyze verify`` and ``systemd-analyze security --offline`` work
without a running systemd (none runs in this container or in CI), so they
check the real files: every key known and well-formed, the program present,
the hardening scored. The units' venv path (``/opt/asyncworker/venv``) is
mapped to the test's fresh venv, since verify requires ``ExecStart``'s program
to exist. Then each ``ExecStart`` runs from that venv against the local
services (its port changed to a free one: the tests share the machine) and
stops at its ``KillSignal`` with status 0.
"""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import signal
import subprocess
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from asyncworker.settings import Settings
from tests.conftest import REPO
from tests.deploy.conftest import Installed
from tests.private_services import free_port

UNITS = REPO / "deploy" / "systemd"
UNIT_VENV = "/opt/asyncworker/venv"
NAMES = {"worker": "asyncworker-worker.service", "beat": "asyncworker-beat.service"}
READY = {"worker": "worker ready", "beat": "beat started"}
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
             "RestrictAddressFamilies", "RestrictNamespaces", "RestrictSUIDSGID",
             "SystemCallFilter", "SystemCallArchitectures", "CapabilityBoundingSet", "UMask")
#: The highest ``systemd-analyze security`` exposure accepted, in tenths (it prints
#: 0.0 safest to 10.0; the units score 1.5).
MAX_EXPOSURE = 20


def service(name: str) -> configparser.SectionProxy:
    """The ``[Service]`` section of a unit (keys case-sensitive; a repeated key's
    last value, which is how systemd reads the keys checked here)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def exec_start(name: str, venv: Path, port: int) -> list[str]:
    """A unit's ``ExecStart`` with the test venv and ``port`` for its HTTP server."""
    argv = shlex.split(service(name)["ExecStart"].replace(UNIT_VENV, str(venv)))
    argv[argv.index("--http-port") + 1] = str(port)
    return argv


def analyze() -> str:
    binary = shutil.which("systemd-analyze")
    assert binary, "systemd-analyze is missing: deploy/local/setup.sh installs systemd"
    return binary


def test_units_verify_and_are_hardened(installed: Installed, tmp_path: Path) -> None:
    for name in NAMES.values():
        unit = tmp_path / name
        unit.write_text((UNITS / name).read_text().replace(UNIT_VENV, str(installed.venv)))
        done = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True,
                              timeout=60)
        # Unknown keys and bad values are warnings with status 0: any output fails.
        assert (done.returncode, done.stdout + done.stderr) == (0, ""), name
        done = subprocess.run([analyze(), "security", "--offline=yes",
                               f"--threshold={MAX_EXPOSURE}", str(unit)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout[-300:] + done.stderr


def test_units_stop_warm_restart_on_failure_run_as_a_user() -> None:
    packaged = tomllib.loads(files("asyncworker.contrib.vision").joinpath(
        "vision_analysis.toml").read_text())
    shutdown = max(packaged["worker_shutdown_timeout"], Settings().worker_shutdown_timeout)
    units = {role: service(name) for role, name in NAMES.items()}
    for role, unit in units.items():
        assert unit["User"] not in ("root", "0") and unit["Type"] == "exec"
        assert unit["ExecStart"].startswith(f"{UNIT_VENV}/bin/python -m asyncworker {role} ")
        assert unit["EnvironmentFile"].startswith("/etc/"), "credentials outside the unit"
        assert unit["KillSignal"] == "SIGTERM" and unit["Restart"] == "on-failure"
        assert int(unit["RestartSec"]) > 0 and unit["RestartPreventExitStatus"] == "2"
        assert unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"
    assert int(units["worker"]["TimeoutStopSec"]) > shutdown, "running tasks get to finish"
    assert {k: units["worker"][k] for k in HARDENING} == {k: units["beat"][k] for k in HARDENING}


def test_the_environment_file_example_names_settings(installed: Installed,
                                                     elsewhere: Path) -> None:
    example = dict(line.split("=", 1) for line in
                   (UNITS / "asyncworker.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    env = {k: v for k, v in installed.env().items() if not k.startswith("ASYNCWORKER_")}
    done = installed.run(["asyncworker", "config"], elsewhere, {**env, **example})
    assert done.returncode == 0, done.stderr
    settings = json.loads(done.stdout)["settings"]
    assert settings["broker_url"] == "amqp://USER:***@rabbitmq.example:5672//"
    assert settings["result_backend"].startswith("db+postgresql://USER:***@postgres.example")


@pytest.mark.integration
def test_the_units_commands_run_and_stop(installed: Installed, elsewhere: Path,
                                         services: dict[str, str], queue_name: str) -> None:
    env = installed.env(worker_queues=queue_name)
    key, value = service(NAMES["worker"])["Environment"].split("=", 1)
    env[key] = value
    started = {}
    try:
        for role, name in NAMES.items():
            port = free_port()
            started[role] = (port, installed.start(exec_start(name, installed.venv, port),
                                                   elsewhere, env, elsewhere / f"{role}.log"))
        for role, (port, process) in started.items():
            process.wait_ready(60, event=READY[role])
            probe = installed.run(["asyncworker", "ping", "--http-port", str(port)], elsewhere)
            assert probe.returncode == 0, probe.stderr
        for role, (_, process) in started.items():
            process.signal(getattr(signal, service(NAMES[role])["KillSignal"]))
            timeout = int(service(NAMES[role])["TimeoutStopSec"])
            assert process.wait_exit(timeout) == 0, process.log_path.read_text()
    finally:
        for _, process in started.values():
            process.stop()
