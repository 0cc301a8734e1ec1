"""The wheel, built once and installed into a fresh virtualenv outside the checkout.

The deployment tests (the wheel itself, the container image's commands, the
systemd units' commands) run asyncworker from that venv, in a working
directory of their own, with nothing pointing back at the checkout: no
``PYTHONPATH``, no ``ASYNCWORKER_`` variables but the ones a test sets. What
they exercise is what ``pip install asyncworker-*.whl`` gives a user.

The wheel is built from a copy of what it is made of (``pyproject.toml``,
``README.md``, ``asyncworker/``), so a stale ``build/`` in the checkout cannot
leak into it, and installed with its dependencies from the configured package
index, as a user would (``python -m venv``, then ``pip install WHEEL``):
measured 2026-11-30 on the 2-core dev machine, about 3 s to build, 3 s for the
venv and 10 s for the install. Session-scoped, so every test shares the one
install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, WorkerProcess, process_env

PIP = ("-m", "pip", "--disable-pip-version-check", "--quiet")
#: What the wheel is built from (the Dockerfile's build stage copies the same).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "asyncworker")


@dataclass(frozen=True, slots=True)
class Installed:
    """The built wheel and the venv it is installed in."""

    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **settings: Any) -> dict[str, str]:
        """The test services' environment (:func:`tests.conftest.process_env`), with
        the venv first on ``PATH`` and nothing that would import the checkout."""
        env = process_env(**settings)
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def resolve(self, argv: list[str]) -> list[str]:
        """``argv`` with its program looked up in the venv first (``python``,
        ``asyncworker``), as a shell with the venv activated would."""
        program = shutil.which(argv[0], path=str(self.bin)) or argv[0]
        return [program, *argv[1:]]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (resolved in the venv) to its end; output captured."""
        return subprocess.run(self.resolve(argv), cwd=cwd, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str],
              log: Path) -> WorkerProcess:
        """Start a long-running ``argv`` (resolved in the venv) logging to ``log``."""
        return WorkerProcess([], env, log, None, program=self.resolve(argv), cwd=cwd)


def pip(python: str | Path, *args: str, cwd: Path) -> None:
    """``python -m pip ARGS``; its output is shown only when it fails."""
    done = subprocess.run([str(python), *PIP, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def build_wheel(root: Path) -> Path:
    """Build the wheel from a clean copy of its sources under ``root``."""
    source = root / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip(sys.executable, "wheel", "--no-deps", "-w", str(root / "dist"), str(source), cwd=root)
    [wheel] = (root / "dist").glob("asyncworker-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """A fresh venv (outside the repository) with the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("install")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120,
                   cwd=root)
    pip(venv / "bin" / "python", "install", str(wheel), cwd=root)
    yield Installed(wheel, venv)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd
