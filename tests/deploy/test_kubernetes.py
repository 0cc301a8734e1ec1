"""deploy/kubernetes, checked without a cluster.

Core kinds go through kubernetes-validate (the API's OpenAPI schemas, strict:
an unknown field is an error) for the oldest and newest Kubernetes it knows of
that we support. KEDA's kinds are not in those schemas: they are parsed with
``cloudcoil-models-keda``, models generated from KEDA's CRDs, and every key is
checked to be a field of its model (the models alone ignore unknown keys). The
kustomize build is validated the same way when ``kubectl`` is installed (it is
not in CI, where the files are validated one by one and the kustomization is
checked against the directory).
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import REPO

K8S = REPO / "deploy/kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
PACKAGED_TOML = REPO / "asyncworker/contrib/vision/vision_analysis.toml"
TOML = tomllib.loads(PACKAGED_TOML.read_text())
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the base's files by (kind, name)."""
    return {(doc["kind"], doc["metadata"]["name"]): doc
            for path in manifests() for doc in documents(path)}


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds (through Optional, list, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def unknown_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys of ``data`` (recursively) that are no field of ``model``."""
    if isinstance(data, list):
        return [key for i, item in enumerate(data)
                for key in unknown_keys(model, item, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    unknown = []
    for key, value in data.items():
        info = fields.get(key)
        if info is None:
            unknown.append(f"{path}.{key}")
            continue
        candidates = [unknown_keys(sub, value, f"{path}.{key}")
                      for sub in _models(info.annotation)]
        if candidates:
            unknown += min(candidates, key=len)
    return unknown


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid object of its kind."""
    if doc["apiVersion"].startswith("keda.sh/"):
        from cloudcoil.models.keda import v1alpha1

        model: type[BaseModel] = getattr(v1alpha1, doc["kind"])
        model.model_validate(doc)
        assert not unknown_keys(model, doc), (doc["kind"], unknown_keys(model, doc))
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_is_valid(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        validate(doc)


def test_validation_rejects_unknown_fields() -> None:
    scaled = objects()["ScaledObject", "asyncworker-worker"]
    bad = {**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}
    with pytest.raises(AssertionError, match="minReplicas"):
        validate(bad)
    trigger = {**scaled["spec"]["triggers"][0], "authRef": {"name": "x"}}
    bad = {**scaled, "spec": {**scaled["spec"], "triggers": [trigger]}}
    with pytest.raises(AssertionError, match=r"triggers\[0\]\.authRef"):
        validate(bad)
    deployment = objects()["Deployment", "asyncworker-worker"]
    bad = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)


def test_kustomization_lists_the_directory() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = set(kustomization["resources"])
    # The Secret is a template the operator fills in, never applied with the base.
    assert listed == {p.name for p in manifests()} - {SECRET_TEMPLATE.name}
    [generator] = kustomization["configMapGenerator"]
    [name] = generator["files"]
    # Kustomize reads no file above its root: the ConfigMap's TOML is a copy.
    assert (K8S / name).read_bytes() == PACKAGED_TOML.read_bytes()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_is_valid() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    for doc in docs:
        validate(doc)
    [config] = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].startswith("asyncworker"):
            volumes = doc["spec"]["template"]["spec"]["volumes"]
            assert {"name": "config", "configMap": {"name": config}} in volumes
            assert doc["spec"]["template"]["spec"]["containers"][0]["image"] \
                == "asyncworker:latest"


def pod_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects()["Deployment", name]["spec"]["template"]["spec"]
    return spec


def test_worker_deployment() -> None:
    pod = pod_spec("asyncworker-worker")
    assert pod["terminationGracePeriodSeconds"] > TOML["worker_shutdown_timeout"]
    [container] = pod["containers"]
    assert container["args"][:1] == ["worker"] and "vision_analysis" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = container["ports"][0]["containerPort"]
    assert container["args"][-2:] == ["--http-port", str(port)]
    annotations = objects()["Deployment", "asyncworker-worker"]["spec"]["template"][
        "metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert container["resources"]["requests"]["memory"]
    assert "replicas" not in objects()["Deployment", "asyncworker-worker"]["spec"]  # KEDA's


def test_beat_has_two_replicas() -> None:
    beat = objects()["Deployment", "asyncworker-beat"]
    assert beat["spec"]["replicas"] == 2
    assert beat["spec"]["template"]["spec"]["containers"][0]["args"][0] == "beat"


def test_every_pod_runs_as_non_root_on_a_read_only_root() -> None:
    for (kind, name), doc in objects().items():
        if kind != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_scaled_object_counts_unacknowledged_messages() -> None:
    scaled = objects()["ScaledObject", "asyncworker-worker"]
    assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in objects()
    [trigger] = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert meta["protocol"] == "http"  # AMQP mode counts only ready messages (keda#2572)
    assert meta["mode"] == "QueueLength" and meta["excludeUnacknowledged"] == "false"
    assert meta["queueName"] in TOML["task_queues"]
    assert int(meta["value"]) == TOML["worker_concurrency"]
    auth = objects()["TriggerAuthentication", trigger["authenticationRef"]["name"]]
    assert [ref["parameter"] for ref in auth["spec"]["secretTargetRef"]] == ["host"]


def test_secret_references_exist_in_the_template() -> None:
    secret = documents(SECRET_TEMPLATE)[0]
    keys = set(secret["stringData"])
    name = secret["metadata"]["name"]
    refs: list[tuple[str, str | None]] = []
    for doc in objects().values():
        for ref in doc.get("spec", {}).get("secretTargetRef", []):
            refs.append((ref["name"], ref["key"]))
        template = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            refs += [(e["secretRef"]["name"], None) for e in container.get("envFrom", [])]
            refs += [(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                     for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref_name, key in refs:
        assert ref_name == name and (key is None or key in keys), (ref_name, key)
    # Worker and beat take every key as a setting: only ASYNCWORKER_* keys are
    # settings; the others are read by KEDA and Flower.
    assert all(value.count("REPLACE-ME") or "USER:PASSWORD" in value
               for value in secret["stringData"].values())
