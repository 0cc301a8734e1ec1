"""deploy/compose/compose.yaml as the tests read it: the file with Compose's
variable interpolation done from ``.env.example``, and per service its command,
environment, bind mounts and health check.

Neither Docker nor Compose is installed where the tests run, so the part of the
file format they need is done here: ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?message}``, ``${VAR?message}`` and ``$$``. One
point is stricter than Compose: a variable with no default that
``.env.example`` does not set is an error, so the example cannot fall behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE_DIR = REPO / "deploy/compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
#: deploy/docker/Dockerfile's exec-form ENTRYPOINT, which a service's ``command`` follows.
ENTRYPOINT = ("python", "-m", "asyncworker")
IMAGE = "asyncworker:"

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments skipped."""
    variables = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with every ``${...}`` replaced as Compose does (see the module doc)."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        value = variables.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(value)
        if empty:
            raise KeyError(f"${{{name}}} is not set in {ENV_EXAMPLE.name}"
                           + (f" ({arg})" if arg else ""))
        return str(value)

    return _REFERENCE.sub(replace, text)


def _interpolated(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolated(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, variables) for key, value in node.items()}
    return node


def raw() -> dict[str, Any]:
    """The file as YAML (merge keys applied), before interpolation."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def load(variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file with its variables filled in (from ``.env.example`` by default)."""
    data: dict[str, Any] = _interpolated(raw(), read_env_file() if variables is None
                                         else variables)
    return data


@dataclass
class Service:
    """One service of the interpolated file."""

    name: str
    spec: dict[str, Any]

    @property
    def environment(self) -> dict[str, str]:
        """Its ``environment``, in either of Compose's forms, as a dict."""
        env = self.spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        return {key: "" if value is None else str(value) for key, value in env.items()}

    @property
    def binds(self) -> dict[str, Path]:
        """Bind mounts: container path -> host path."""
        out = {}
        for volume in self.spec.get("volumes", []):
            if isinstance(volume, dict) and volume.get("type") == "bind":
                out[volume["target"]] = (COMPOSE_DIR / volume["source"]).resolve()
        return out

    @property
    def replicas(self) -> int:
        return int(self.spec.get("deploy", {}).get("replicas", 1))

    @property
    def runs_asyncworker(self) -> bool:
        """The asyncworker image with its own entrypoint (``python -m asyncworker``)."""
        return str(self.spec.get("image", "")).startswith(IMAGE) and "entrypoint" not in self.spec

    def argv(self) -> list[str]:
        """The process the container runs: the image's entrypoint, then ``command``."""
        assert self.runs_asyncworker, self.name
        return [*ENTRYPOINT, *self.spec.get("command", [])]

    def healthcheck_argv(self) -> list[str]:
        """The health check's ``CMD`` form as an argv."""
        test = list(self.spec["healthcheck"]["test"])
        assert test[0] == "CMD", f"{self.name}: health check not in exec form: {test}"
        return test[1:]


def services(data: Mapping[str, Any] | None = None) -> dict[str, Service]:
    """The services of ``data`` (default: ``load()``) by name."""
    data = load() if data is None else data
    return {name: Service(name, spec) for name, spec in data["services"].items()}
