"""Installed from the wheel into a fresh venv and started from another directory.

The venv (see ``conftest.py``) is the only place ``asyncworker`` is imported
from; each command runs with a working directory outside the checkout. The
worker and beat serve a real Celery client through the local RabbitMQ and
PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import result_of, wait_for
from tests.deploy.conftest import Installed
from tests.integration.test_beat import beat_config

pytestmark = pytest.mark.integration

PACKAGED_CONFIG = "asyncworker/contrib/vision/vision_analysis.toml"
GROWBIN_QUEUES = ["celery", "user_input", "vision_analysis", "response_generation",
                  "high_priority"]


def output(installed: Installed, cwd: Path, *argv: str, **settings: str) -> str:
    """Run ``argv`` from the venv in ``cwd``; its stdout (it must succeed)."""
    done = installed.run(list(argv), cwd, installed.env(**settings))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_holds_the_package_and_nothing_else(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "asyncworker/py.typed" in names and PACKAGED_CONFIG in names
    assert {name.split("/")[0] for name in names} == {
        "asyncworker", installed.wheel.name.split("-py3")[0] + ".dist-info"}
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "asyncworker = asyncworker.cli:main" in zipfile.ZipFile(
        installed.wheel).read(entry_points).decode()


def test_version_from_the_script_and_the_module(installed: Installed, elsewhere: Path) -> None:
    version = installed.wheel.name.split("-")[1]
    for argv in (["asyncworker", "--version"], ["python", "-m", "asyncworker", "--version"]):
        assert output(installed, elsewhere, *argv) == f"asyncworker {version}\n"


def test_imported_from_the_venv_with_its_type_marker(installed: Installed,
                                                     elsewhere: Path) -> None:
    script = ("import asyncworker, importlib.resources as r; print(asyncworker.__file__); "
              "print(r.files('asyncworker').joinpath('py.typed').is_file())")
    path, typed = output(installed, elsewhere, "python", "-c", script).split()
    assert Path(path).is_relative_to(installed.venv) and typed == "True"


def test_default_app_reads_the_packaged_config(installed: Installed, elsewhere: Path) -> None:
    report = json.loads(output(installed, elsewhere, "asyncworker", "config"))
    assert Path(report["sources"][1]).is_relative_to(installed.venv)
    assert report["sources"][1].endswith(PACKAGED_CONFIG)
    assert report["plugins"] == ["beat", "events", "monitoring", "worker_lost", "parked", "vision"]
    settings = report["settings"]
    assert list(settings["task_queues"]) == GROWBIN_QUEUES
    assert settings["task_routes"]["workers.ai.tasks.gpt5_analysis_task"] == {
        "queue": "vision_analysis"}

    own = elsewhere / "own.toml"
    own.write_text('worker_concurrency = 7\ngpt_model = "own"\n')
    for args, env in ((["--config", str(own)], {}), ([], {"CONFIG": str(own)})):
        report = json.loads(output(installed, elsewhere, "asyncworker", "config", *args, **env))
        assert report["sources"][1] == str(own) and not report["settings"]["task_queues"]
        assert report["settings"]["worker_concurrency"] == 7
        assert report["settings"]["vision"]["gpt_model"] == "own"


def test_worker_with_no_options_serves_the_growbin_queues(installed: Installed, elsewhere: Path,
                                                          services: dict[str, str]) -> None:
    """``asyncworker worker`` as installed: the packaged config's queues and tasks."""
    worker = installed.start(["asyncworker", "worker"], elsewhere, installed.env(),
                             elsewhere / "worker.log")
    try:
        worker.wait_ready(60)
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.log_path.read_text()
    [event] = worker.events("worker ready")
    assert event["queues"] == GROWBIN_QUEUES
    assert {"workers.ai.tasks.gpt5_analysis_task",
            "workers.storage.tasks.image_upload_task"} <= set(event["tasks"])


def test_worker_and_beat_serve_a_celery_client(installed: Installed, elsewhere: Path,
                                               celery_app: Any, queue_name: str) -> None:
    """The console script's worker runs what a Celery client sends; ``python -m
    asyncworker beat`` fires its entry and the worker runs that too. Both read
    a settings file in their working directory, as a deployment's would."""
    entry = f"wheel-{uuid.uuid4().hex[:8]}"
    config = beat_config(elsewhere / "settings.toml", {entry: {
        "task": "asyncworker.sample.add", "schedule": 1.0, "args": [40, 2],
        "options": {"queue": queue_name}}})
    env = installed.env()
    worker = installed.start(["asyncworker", "worker", "--config", config, "-Q", queue_name],
                             elsewhere, env, elsewhere / "worker.log")
    beat = installed.start(["python", "-m", "asyncworker", "beat", "--config", config],
                           elsewhere, env, elsewhere / "beat.log")
    try:
        worker.wait_ready(60)
        sent = [celery_app.send_task("asyncworker.sample.add", [i, i],
                                     queue=queue_name) for i in range(20)]
        assert [result_of(result) for result in sent] == [2 * i for i in range(20)]

        beat.wait_ready(60, event="beat started")
        fired = wait_for(lambda: [line for line in beat.events("beat fired")
                                  if line["entry"] == entry], 30, what="the entry firing")
        assert result_of(celery_app.AsyncResult(fired[0]["task_id"])) == 42
    finally:
        beat.stop()
        worker.stop()
    assert (worker.proc.returncode, beat.proc.returncode) == (0, 0)
