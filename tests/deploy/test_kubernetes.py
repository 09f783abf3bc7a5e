"""The Kustomize base in deploy/kubernetes: every document it renders (and the Secret template) is valid
against the Kubernetes schemas, offline; and what the manifests say of the shim is what the shim does:
the probes and ports are the ConfigMap's shim.toml's, the Secret's variables are the ones the shim
reads, the pods outlive the shim's drain."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from shim.admin_settings import AdminSettings, is_loopback
from shim.pipeline import RedactSettings
from tests.deploy._files import KUBERNETES, one, port_of, render, shipped_config, stop_bound

# the oldest Kubernetes the manifests are for (gRPC probes are GA from 1.27), and the newest the
# validator knows
VERSIONS = ("1.28", kubernetes_validate.latest_version())
SECRET_TEMPLATE = KUBERNETES / "secret.example.yaml"
STORE_PASSWORD = "PGPASSWORD"  # libpq's: the store's password, kept out of [store] url


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (shim,) = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return shim  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_document_and_the_secret_template_validate_against_the_schemas(version: str) -> None:
    """Each document the base renders, and the Secret template, is valid for the Kubernetes version, with
    no field the schema does not know (strict)."""
    documents = [*render(), yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))]
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_a_field_the_schema_does_not_know() -> None:
    """The check can fail: a misspelt probe field is refused."""
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_the_secret_template_is_not_applied_with_the_base() -> None:
    """Applying the base never writes over the real Secret: the template is not one of its resources."""
    assert all(doc["kind"] != "Secret" for doc in render())


def test_the_probes_and_ports_are_the_shipped_configs(tmp_path: Path) -> None:
    """Every probe asks gRPC health on the port shim.toml listens on, and the container, the Service and
    the metrics port agree with it."""
    documents = render()
    config = shipped_config(tmp_path)
    listen, metrics = port_of(config.serving.listen), port_of(config.serving.metrics_listen)
    shim = container(documents)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert shim[probe]["grpc"] == {"port": listen}, probe
    ports = {port["name"]: port["containerPort"] for port in shim["ports"]}
    assert ports == {"grpc": listen, "metrics": metrics}
    service = one(documents, "Service")["spec"]
    assert {port["targetPort"] for port in service["ports"]} == set(ports)
    assert not is_loopback(config.serving.listen)
    assert not is_loopback(config.serving.metrics_listen)


def test_the_secret_holds_the_variables_the_shim_reads(tmp_path: Path) -> None:
    """The container's variables from the Secret are the admin token's and the redaction key's as the
    shim reads them (with the shipped config, and by default), and the store's password; the template
    has each of them."""
    config = shipped_config(tmp_path)
    assert config.admin.token_env == AdminSettings().token_env
    assert config.redact.key_env == RedactSettings().key_env
    from_secret = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in container(render())["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert set(from_secret) == {config.admin.token_env, config.redact.key_env, STORE_PASSWORD}
    template = yaml.safe_load(SECRET_TEMPLATE.read_text(encoding="utf-8"))
    for ref in from_secret.values():
        assert ref["name"] == template["metadata"]["name"]
        assert ref["key"] in template["stringData"]
    store = urlsplit(config.store.url)
    assert store.scheme == "postgresql"
    assert store.password is None


def test_the_pods_outlive_the_shims_drain(tmp_path: Path) -> None:
    """terminationGracePeriodSeconds covers the preStop pause and the longest stop the shipped
    grace_period allows."""
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    pause = container(render())["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    grace = shipped_config(tmp_path).serving.grace_period
    assert pod["terminationGracePeriodSeconds"] > float(pause[1]) + stop_bound(grace)


def test_a_fleet_of_three_runs_unprivileged_on_a_read_only_root(tmp_path: Path) -> None:
    """Three replicas, one down at a time at most (rollout and disruptions), non-root, no privilege,
    the root file system read-only with /tmp (where Envoy's files go) writable, shim.toml mounted where
    the image's command reads it."""
    documents = render()
    deployment = one(documents, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    budget = one(documents, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert one(documents, "Service")["spec"]["selector"].items() <= labels.items()
    pod, shim = spec["template"]["spec"], container(documents)
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["runAsUser"] != 0
    context = shim["securityContext"]
    assert context["readOnlyRootFilesystem"]
    assert not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in shim["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    assert mounts["/etc/shim"]["configMap"]["name"] == one(documents, "ConfigMap")["metadata"]["name"]
    assert shim["resources"]["requests"]["cpu"]
    assert shim["resources"]["limits"]["memory"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_loader_renders_what_kustomize_renders() -> None:
    """Where kubectl is installed, its own Kustomize renders the same documents as the loader."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert sorted(yaml.safe_load_all(out), key=_name) == sorted(render(), key=_name)


def _name(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]
