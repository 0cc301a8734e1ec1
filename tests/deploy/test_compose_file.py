"""Lints of what CI cannot run: every YAML under deploy/ through yamllint, and
deploy/compose/compose.yaml against the Compose Specification's JSON schema
(check-jsonschema's built-in copy, so no network) and the rules the stack keeps:
a health check and a start condition everywhere, credentials only from .env.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tomllib
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO
from tests.deploy import compose_file
from tests.deploy.compose_file import ENTRYPOINT, Service, interpolate, read_env_file

DEPLOY = REPO / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
TOML = tomllib.loads((REPO / "config/vision_analysis.toml").read_text())
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|AUTH|TOKEN")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_yamllint() -> None:
    assert len(YAML_FILES) >= 9, YAML_FILES
    done = run("yamllint", "--strict", "-c", str(REPO / ".yamllint"),
               *(str(path) for path in YAML_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_matches_the_compose_specification() -> None:
    done = run("check_jsonschema", "--builtin-schema", "vendor.compose-spec",
               str(compose_file.COMPOSE_FILE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_has_a_health_check_and_waits_on_conditions() -> None:
    services = compose_file.services()
    one_shot = {name for name, service in services.items() if "healthcheck" not in service.spec}
    for service in services.values():
        for dependency, how in service.spec.get("depends_on", {}).items():
            assert dependency in services, (service.name, dependency)
            wanted = ("service_completed_successfully" if dependency in one_shot
                      else "service_healthy")
            assert how == {"condition": wanted}, (service.name, dependency, how)
    # A service without a health check is a one-shot job that others wait for.
    for name in one_shot:
        assert services[name].spec.get("restart") == "no", name
        assert any(name in s.spec.get("depends_on", {}) for s in services.values()), name
    assert one_shot == {"s3-init"}
    assert {"rabbitmq", "postgres", "redis", "s3", "model-api", "worker", "beat", "flower",
            "prometheus"} <= set(services)


def test_asyncworker_services() -> None:
    services = compose_file.services()
    worker, beat = services["worker"], services["beat"]
    assert worker.argv()[:4] == [*ENTRYPOINT, "worker"]
    assert "vision_analysis" in worker.argv()
    assert beat.argv() == [*ENTRYPOINT, "beat"] and beat.replicas == 2
    assert "management" in services["rabbitmq"].spec["image"]
    grace = worker.spec["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > TOML["worker_shutdown_timeout"]
    for service in (worker, beat):
        env = service.environment
        config = env["ASYNCWORKER_CONFIG"]
        assert service.binds[config] == (REPO / "config/vision_analysis.toml").resolve()
        assert env["ASYNCWORKER_WORKER_HTTP_HOST"] == "0.0.0.0"  # reachable by Prometheus
        assert service.healthcheck_argv() == [*ENTRYPOINT, "ping"]
    ports = {service.environment["ASYNCWORKER_WORKER_HTTP_PORT"] for service in (worker, beat)}
    prometheus = (compose_file.COMPOSE_DIR / "prometheus.yml").read_text()
    for port in ports:
        assert f"port: {port}" in prometheus


def test_credentials_come_only_from_env_file() -> None:
    """Every password, key and URL user in the raw file is a ${...} reference."""
    for name, spec in compose_file.raw()["services"].items():
        env = Service(name, spec).environment
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"(\$\{[^}]+\}:?)+", value), (name, key, value)
            parts = urlsplit(value)
            if parts.password is not None or (parts.username or "").strip(":"):
                userinfo = parts.netloc.rpartition("@")[0]
                assert re.fullmatch(r"(\$\{[^}]+\}|:)+", userinfo), (name, key, value)
        command = spec.get("command", [])
        for option, value in itertools.pairwise(command):
            if "pass" in option.lower():
                assert re.fullmatch(r"\$\{[^}]+\}", value), (name, option, value)


def test_env_example_sets_every_variable_and_env_is_ignored() -> None:
    variables = read_env_file()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_file.COMPOSE_FILE.read_text()))
    optional = {"ASYNCWORKER_IMAGE"}  # has a default
    assert used - optional <= set(variables), used - set(variables)
    assert not set(variables) - used, "unused in compose.yaml"
    compose_file.load()  # every reference resolves
    with pytest.raises(KeyError, match="RABBITMQ_PASSWORD"):
        compose_file.load({k: v for k, v in variables.items() if k != "RABBITMQ_PASSWORD"})
    assert "deploy/compose/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_interpolation() -> None:
    variables = {"A": "1", "E": ""}
    assert interpolate("$${A}-${A}-${B:-x}-${E:-y}-${E-z}", variables) == "${A}-1-x-y-"
    for text in ("${B}", "${E:?needed}", "${B?needed}"):
        with pytest.raises(KeyError):
            interpolate(text, variables)


def test_dockerfile_entrypoint_is_the_one_commands_follow() -> None:
    dockerfile = REPO / "deploy/docker/Dockerfile"
    if not dockerfile.exists():
        pytest.skip("deploy/docker/Dockerfile is not in this tree")
    lines = [line for line in dockerfile.read_text().splitlines()
             if line.strip().upper().startswith("ENTRYPOINT")]
    assert [json.loads(line.split(None, 1)[1]) for line in lines][-1] == list(ENTRYPOINT)


def test_urls_between_services_use_their_ports_and_credentials() -> None:
    services = compose_file.services()
    rabbit, pg = services["rabbitmq"].environment, services["postgres"].environment
    given = {  # (user, password, path) a URL to the service must carry
        "rabbitmq": {(rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"])},
        "postgres": {(pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])},
        "redis": {("", services["redis"].environment["REDISCLI_AUTH"])},
    }
    model_api = services["model-api"].spec["entrypoint"]
    listening = {  # the images' defaults, and the model API's own --port
        "rabbitmq": {5672, 15672}, "postgres": {5432}, "redis": {6379}, "s3": {5000},
        "model-api": {int(model_api[model_api.index("--port") + 1])},
    }
    seen = set()
    for service in services.values():
        texts = [*service.environment.values(), *service.spec.get("entrypoint", [])]
        for text in texts:
            for url in re.findall(r"[a-z+]+://[^\s'\"]+", text):
                parts = urlsplit(url)
                if parts.hostname in services:
                    assert parts.port in listening[parts.hostname], (service.name, url)
                    if parts.hostname in given:
                        assert (parts.username, parts.password) in given[parts.hostname], url
                    if parts.hostname == "postgres":
                        assert parts.path == "/" + pg["POSTGRES_DB"], url
                    seen.add(parts.hostname)
    assert seen == set(listening)
