"""Another git revision's asyncworker, checked out beside this tree for ``--baseline``.

A baseline worker imports ``asyncworker`` from a temporary, detached ``git
worktree`` of the revision, and everything else (``bench.apps``) from this tree.
Putting the worktree itself on the path would also bring in its own ``bench``
package, so the path gets a folder holding only a link to the revision's
``asyncworker`` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "asyncworker"


@dataclass(frozen=True)
class Baseline:
    """A checked-out revision whose asyncworker the baseline rows run."""

    ref: str  # as given on the command line, e.g. HEAD~3
    commit: str  # its short hash, used in row labels
    tree: Path  # the detached worktree
    path: Path  # put first on a baseline worker's PYTHONPATH


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], check=check, capture_output=True,
                          text=True)


def resolve(repo: Path, ref: str) -> str:
    """The short hash of ``ref``'s commit; ``ValueError`` if git does not know it."""
    try:
        found = _git(repo, "rev-parse", "--short", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"{ref!r} is not a commit of this repository") from None
    return found.stdout.strip()


def package_init(root: Path) -> Path:
    """``asyncworker/__init__.py`` under a source tree, flat or ``src/`` layout."""
    for candidate in (root / PACKAGE, root / "src" / PACKAGE):
        if (candidate / "__init__.py").is_file():
            return (candidate / "__init__.py").resolve()
    raise FileNotFoundError(f"no {PACKAGE} package in {root}")


@contextlib.contextmanager
def checkout(repo: Path, ref: str) -> Iterator[Baseline]:
    """A detached worktree of ``ref`` in a temporary folder, removed on exit (errors too)."""
    commit = resolve(repo, ref)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{commit}-"))
    tree = folder / "tree"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        path = folder / "path"
        path.mkdir()
        (path / PACKAGE).symlink_to(package_init(tree).parent, target_is_directory=True)
        yield Baseline(ref, commit, tree, path)
    finally:
        removed = _git(repo, "worktree", "remove", "--force", str(tree), check=False)
        shutil.rmtree(folder, ignore_errors=True)
        if removed.returncode:  # e.g. interrupted while adding: drop git's record of it
            _git(repo, "worktree", "prune", check=False)


def imported_from(python: Sequence[str], env: Mapping[str, str], cwd: Path) -> Path:
    """Which ``asyncworker/__init__.py`` this interpreter, environment and folder import."""
    code = f"import {PACKAGE}; print({PACKAGE}.__file__)"
    done = subprocess.run([*python, "-c", code], env=dict(env), cwd=cwd, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"cannot import {PACKAGE}: {done.stderr.strip()[-2000:]}")
    return Path(done.stdout.strip()).resolve()


def python_path(first: Path, repo: Path, inherited: str | None) -> str:
    """``first`` ahead of this tree (for ``bench``), then whatever PYTHONPATH was set."""
    parts = [str(first), str(repo), *(inherited.split(os.pathsep) if inherited else [])]
    return os.pathsep.join(dict.fromkeys(parts))
