"""The chart renders with Helm's own engine, lints clean, and every manifest is a valid
Kubernetes object for the newest minor kubernetes-validate ships; objects reference each
other consistently (selectors, Services, volumes, Secrets)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import render
import yaml
from render import VALUES_FILES, find, pod_spec, render_manifests

KUBE_VERSION = kubernetes_validate.latest_version()  # "1.37.0"
KUBE_MINOR = ".".join(KUBE_VERSION.split(".")[:2])

# Variants beyond the shipped values files, so optional templates are exercised too.
VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    **{f: (f, {}) for f in VALUES_FILES},
    "everything-on": ("values-demo.yaml", {
        "config": {"file": {"tls_min_version": "1.3", "profiles": {"machine": {"default_hours": 720}}}},
        "networkPolicy": {"egress": {"enabled": True, "extraRules": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]}},
        "worker": {"replicas": 2, "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 30}},
        "ocsp": {"autoscaling": {"enabled": False}, "replicas": 3},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {"a": "b"}}],
    }),
    "pkcs11-vendor-volume": ("values-production.yaml", {
        "hsm": {"vendor": {"copyFromImage": {"enabled": False},
                           "volume": {"csi": {"driver": "hsm.example.com", "readOnly": True}},
                           "configMap": "hsm-client-conf"}},
        "migrate": {"strategy": "initContainer"},
        "persistence": {"enabled": True, "accessModes": ["ReadWriteMany"]},
    }),
    "sqlite-minimal": (None, {"ocsp": {"enabled": False}, "worker": {"enabled": False},
                              "networkPolicy": {"enabled": False}, "metrics": {"enabled": False}}),
}

# Objects the chart expects to exist already (created by the operator), by variant.
EXTERNAL_SECRETS = {
    "ikepki-database", "ikepki-database-replica", "ikepki-hsm-pin", "ikepki-ocsp-hsm-pin", "ikepki-admin",
    "ikepki-ca", "ikepki-ocsp-edge", "ikepki-hsm-client", "pki-gateway-identity", "regcred",
}
EXTERNAL_CONFIGMAPS = {"hsm-client-conf"}


@pytest.fixture(scope="module", autouse=True)
def _cached_kubernetes_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads the (large) definitions JSON for every object; the schema
    files are immutable, so cache them for this module."""
    utils = kubernetes_validate.utils
    original = utils.schema_contents
    utils.schema_contents = functools.cache(original)
    yield
    utils.schema_contents = original


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    values_file, overrides = VARIANTS[request.param]
    return request.param, render_manifests(values_file, overrides)


def _validate_crd(obj: dict[str, Any]) -> None:
    """kubernetes-validate ships no CRD schemas: check the ServiceMonitor shape by hand."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["kind"] == "ServiceMonitor"
    spec = obj["spec"]
    assert spec["selector"] and spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"


def test_every_manifest_validates_against_newest_kubernetes(variant: tuple[str, list[dict[str, Any]]]) -> None:
    name, manifests = variant
    assert manifests, name
    for obj in manifests:
        try:
            validated = kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            _validate_crd(obj)
            continue
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - failure path
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")
        assert validated == KUBE_MINOR


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict_is_clean(values_file: str) -> None:
    report = render.lint(values_file, kube_version=f"v{KUBE_VERSION}")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_render_has_every_core_component() -> None:
    manifests = render_manifests()
    deployments = {d["metadata"]["name"] for d in find(manifests, "Deployment")}
    assert deployments == {"pki-ikepki-api", "pki-ikepki-ocsp", "pki-ikepki-worker"}
    assert {s["metadata"]["name"] for s in find(manifests, "Service")} == {"pki-ikepki-api", "pki-ikepki-ocsp"}
    assert find(manifests, "HorizontalPodAutoscaler", "pki-ikepki-ocsp")
    assert {p["metadata"]["name"] for p in find(manifests, "PodDisruptionBudget")} == {
        "pki-ikepki-api", "pki-ikepki-ocsp", "pki-ikepki-worker"}
    assert {p["metadata"]["name"] for p in find(manifests, "PersistentVolumeClaim")} == {
        "pki-ikepki-state", "pki-ikepki-softhsm"}
    assert not find(manifests, "Ingress")
    assert not find(manifests, "ServiceMonitor")


def test_demo_render_has_gateway_postgres_ingress_and_servicemonitor() -> None:
    manifests = render_manifests("values-demo.yaml")
    assert find(manifests, "Deployment", "pki-ikepki-gateway")
    assert find(manifests, "StatefulSet", "pki-ikepki-postgresql")
    assert {i["metadata"]["name"] for i in find(manifests, "Ingress")} == {"pki-ikepki-enroll", "pki-ikepki-public"}
    assert find(manifests, "ServiceMonitor")


def test_ocsp_edge_renders_only_the_ocsp_responder() -> None:
    manifests = render_manifests("values-ocsp-edge.yaml")
    assert [d["metadata"]["name"] for d in find(manifests, "Deployment")] == ["pki-ikepki-ocsp"]
    assert not find(manifests, "Job") and not find(manifests, "PersistentVolumeClaim")
    assert not find(manifests, "Secret"), "edge brings its own secrets"
    ingress = find(manifests, "Ingress")
    assert [i["metadata"]["name"] for i in ingress] == ["pki-ikepki-public"]
    backends = {p["backend"]["service"]["name"] for r in ingress[0]["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"pki-ikepki-ocsp"}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_references_are_consistent(variant: tuple[str, list[dict[str, Any]]]) -> None:
    name, manifests = variant
    ns = render.NAMESPACE
    keys = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    assert len(keys) == len(set(keys)), f"{name}: duplicate objects"
    for m in manifests:
        assert m["metadata"].get("namespace", ns) == ns

    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "Job")]
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    secrets = {m["metadata"]["name"] for m in find(manifests, "Secret")} | EXTERNAL_SECRETS
    configmaps = {m["metadata"]["name"] for m in find(manifests, "ConfigMap")} | EXTERNAL_CONFIGMAPS
    claims = {m["metadata"]["name"] for m in find(manifests, "PersistentVolumeClaim")}

    for w in workloads:
        if w["kind"] != "Job":
            assert _matches(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (name, container["name"], mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, (name, env)
        for volume in volumes.values():
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, (name, volume)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, (name, volume)
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    assert source["configMap"]["name"] in configmaps, (name, volume)
                if "secret" in source:
                    assert source["secret"]["name"] in secrets, (name, volume)
        for secret in spec.get("imagePullSecrets", []):
            assert secret["name"] in secrets

    services = {s["metadata"]["name"]: s for s in find(manifests, "Service")}
    for svc in services.values():
        assert any(_matches(svc["spec"]["selector"], labels) for labels in pod_labels), (name, svc["metadata"])
        for port in svc["spec"]["ports"]:
            if isinstance(port["targetPort"], str):
                assert any(
                    p["name"] == port["targetPort"] and p.get("protocol", "TCP") == port["protocol"]
                    for w in workloads if _matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
                    for c in pod_spec(w)["containers"] for p in c.get("ports", [])
                ), (name, svc["metadata"]["name"], port)

    for ingress in find(manifests, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, (name, backend)
                assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in find(manifests, kind):
            selector = (obj["spec"].get("selector") or obj["spec"]["podSelector"])["matchLabels"]
            assert any(_matches(selector, labels) for labels in pod_labels), (name, kind, obj["metadata"]["name"])

    deployments = {d["metadata"]["name"] for d in find(manifests, "Deployment")}
    for hpa in find(manifests, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        target = find(manifests, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])[0]
        assert "replicas" not in target["spec"], "the HPA owns the replica count"


def test_config_file_is_passed_through_ikepki_config_only_when_set() -> None:
    plain = render.component_processes()
    assert all("IKEPKI_CONFIG" not in p.env for p in plain.values())
    overrides = {"config": {"file": {"tls_min_version": "1.3"}}}
    with_file = render.component_processes(None, overrides)
    for component in ("api", "ocsp", "worker", "migrate", "init-ca"):
        assert with_file[component].env["IKEPKI_CONFIG"] == "/etc/ikepki/ikepki.yaml", component
        assert "--config" not in with_file[component].args, "args stay exactly as contracted"
    cm = find(render_manifests(None, overrides), "ConfigMap", "pki-ikepki-config")[0]
    assert yaml.safe_load(cm["data"]["ikepki.yaml"]) == {"tls_min_version": "1.3"}
    job_cm = find(render_manifests("values-production.yaml", overrides), "ConfigMap", "pki-ikepki-migrate")[0]
    assert yaml.safe_load(job_cm["data"]["ikepki.yaml"]) == {"tls_min_version": "1.3"}


def test_release_name_containing_chart_name_is_not_doubled() -> None:
    manifests = render_manifests(None, None, name="ikepki")
    assert find(manifests, "Deployment", "ikepki-api")


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_rendered_yaml_has_no_trailing_whitespace(values_file: str) -> None:
    for path, text in render.render_templates(values_file).items():
        assert [line for line in text.splitlines() if line != line.rstrip()] == [], path


def test_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    """`helm package` keeps templates, schema and values files (and .helmignore drops junk)."""
    import tarfile

    import helm_python

    archive = helm_python.package(str(render.CHART_DIR), destination=str(tmp_path))
    assert Path(archive).name == "ikepki-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for expected in ("values.schema.json", "values-demo.yaml", "values-production.yaml", "values-ocsp-edge.yaml",
                     "README.md", "templates/NOTES.txt"):
        assert f"ikepki/{expected}" in names
    with helm_python.Chart.load(archive) as chart:
        assert chart.schema is not None
        packaged = chart.render(render.user_values("values-production.yaml"), name=render.RELEASE,
                                namespace=render.NAMESPACE, is_install=True)
    assert packaged == render.render_templates("values-production.yaml")


def test_extra_secret_mounts_reach_the_serving_pods_read_only_and_bad_names_are_refused() -> None:
    """A secret by file reference (e.g. console.oidc.client_secret_file) can be mounted from a Secret."""
    overrides = {"extraSecretMounts": [{"name": "console-oidc", "secretName": "idp-client"}]}
    manifests = render_manifests(None, overrides)
    for name in ("pki-ikepki-api", "pki-ikepki-ocsp", "pki-ikepki-worker"):
        spec = pod_spec(find(manifests, "Deployment", name)[0])
        volume = [v for v in spec["volumes"] if v["name"] == "extra-console-oidc"]
        assert volume == [{"name": "extra-console-oidc", "secret": {"secretName": "idp-client", "defaultMode": 0o440}}]
        mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == "extra-console-oidc"]
        assert mounts and all(m == {"name": "extra-console-oidc", "mountPath": "/run/secrets/ikepki/console-oidc",
                                    "readOnly": True} for m in mounts), name
    for job in find(manifests, "Job"):
        assert all(v["name"] != "extra-console-oidc" for v in pod_spec(job)["volumes"])
    for bad in ({"name": "hsm", "secretName": "x"}, {"name": "../etc", "secretName": "x"}, {"name": "ok"}):
        with pytest.raises(Exception, match="extraSecretMounts"):
            render_manifests(None, {"extraSecretMounts": [bad]})

