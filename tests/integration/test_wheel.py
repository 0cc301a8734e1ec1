"""Installed from a wheel and started from any directory, the default app has its config.

The wheel is built from a copy of what it is made of (``pyproject.toml``,
``README.md``, ``asyncworker/``), so a stale ``build/`` in the checkout cannot
leak into it, then installed with ``pip install --target`` into a temporary
directory that is the only place ``asyncworker`` is imported from. Building
takes a few seconds (pip's isolated build environment, from the configured
package index); the worker test also needs RabbitMQ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BROKER_URL, PG_DSN, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PACKAGED_CONFIG = "asyncworker/contrib/vision/vision_analysis.toml"
GROWBIN_QUEUES = ["celery", "user_input", "vision_analysis", "response_generation",
                  "high_priority"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel, installed into a directory of its own; yields that directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "asyncworker", source / "asyncworker",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(root / "dist"), str(source)],
                   check=True, timeout=300, cwd=root)
    [wheel] = (root / "dist").glob("asyncworker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert PACKAGED_CONFIG in names
    assert not [n for n in names if n.startswith("asyncworker/vision/")]
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300, cwd=root)
    yield target


def elsewhere_env(target: Path, **extra: str) -> dict[str, str]:
    """The environment of a process outside the checkout that imports the installed copy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCWORKER_")}
    env.update(PYTHONPATH=str(target), PYTHONUNBUFFERED="1", **extra)
    return env


def run_elsewhere(target: Path, cwd: Path, *args: str, **env: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=elsewhere_env(target, **env),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_default_app_reads_the_packaged_config(installed: Path, tmp_path: Path) -> None:
    imported = run_elsewhere(installed, tmp_path, "-c",
                             "import asyncworker; print(asyncworker.__file__)")
    assert Path(imported.strip()).is_relative_to(installed)

    report = json.loads(run_elsewhere(installed, tmp_path, "-m", "asyncworker", "config"))
    assert report["sources"][1] == str(installed / PACKAGED_CONFIG)
    assert report["plugins"] == ["beat", "events", "monitoring", "worker_lost", "parked", "vision"]
    settings = report["settings"]
    assert list(settings["task_queues"]) == GROWBIN_QUEUES
    assert settings["task_routes"]["workers.ai.tasks.gpt5_analysis_task"] == {
        "queue": "vision_analysis"}
    assert settings["result_backend"] == (
        "db+postgresql://asyncworker:***@127.0.0.1:5432/asyncworker")

    own = tmp_path / "own.toml"
    own.write_text('worker_concurrency = 7\ngpt_model = "own"\n')
    for args, env in ((["--config", str(own)], {}), ([], {"ASYNCWORKER_CONFIG": str(own)})):
        report = json.loads(run_elsewhere(installed, tmp_path, "-m", "asyncworker", "config",
                                          *args, **env))
        assert report["sources"][1] == str(own) and not report["settings"]["task_queues"]
        assert report["settings"]["worker_concurrency"] == 7
        assert report["settings"]["vision"]["gpt_model"] == "own"


def test_worker_from_the_wheel_serves_vision_analysis(installed: Path, tmp_path: Path,
                                                      services: dict[str, str]) -> None:
    """``python -m asyncworker worker`` with no options, started outside the checkout."""
    log = tmp_path / "worker.log"
    env = elsewhere_env(installed, ASYNCWORKER_BROKER_URL=BROKER_URL,
                        ASYNCWORKER_RESULT_BACKEND="db+" + PG_DSN,
                        ASYNCWORKER_WORKER_LOG_FORMAT="json")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "asyncworker", "worker"], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()}")
            lines = [json.loads(line) for line in log.read_text().splitlines()
                     if line.startswith("{")]
            return next((line for line in lines if line.get("event") == "worker ready"), None)

        try:
            event = wait_for(ready, 60, what="worker ready")
        finally:
            proc.terminate()
            assert proc.wait(timeout=60) == 0, log.read_text()
    assert event["queues"] == GROWBIN_QUEUES
    assert {"workers.ai.tasks.gpt5_analysis_task",
            "workers.storage.tasks.image_upload_task"} <= set(event["tasks"])
