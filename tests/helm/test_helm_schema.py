"""values.schema.json is strict: Helm refuses to render (and lint reports) bad values."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import pytest
import render
import yaml
from render import CHART_DIR, VALUES_FILES, render_templates

PRODUCTION = "values-production.yaml"

# name -> (values file, overrides, text expected in Helm's error)
REJECTED: dict[str, tuple[str | None, dict[str, Any], str]] = {
    "replicas-as-word": (None, {"api": {"replicas": "two"}}, "/api/replicas"),
    "negative-replicas": (None, {"worker": {"replicas": -1}}, "/worker/replicas"),
    "unknown-top-level-key": (None, {"replicaCount": 3}, "replicaCount"),
    "unknown-nested-key": (None, {"ocsp": {"replica": 2}}, "replica"),
    "typo-in-hsm-section": (None, {"hsm": {"pinSecret": "x"}}, "pinSecret"),
    "bad-database-type": (None, {"database": {"type": "mysql"}}, "/database/type"),
    "bad-hsm-type": (None, {"hsm": {"type": "yubihsm"}}, "/hsm/type"),
    "bad-mode": (None, {"mode": "staging"}, "/mode"),
    "bad-service-type": (None, {"api": {"service": {"type": "ExternalName"}}}, "/api/service/type"),
    "bad-pull-policy": (None, {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "bad-digest": (None, {"image": {"digest": "sha256:abc"}}, "/image/digest"),
    "relative-module-path": (None, {"hsm": {"modulePath": "libsofthsm2.so"}}, "/hsm/modulePath"),
    "port-out-of-range": (None, {"ocsp": {"service": {"port": 70000}}}, "/ocsp/service/port"),
    "url-without-scheme": (None, {"config": {"publicBaseUrl": "pki.example.internal"}}, "/config/publicBaseUrl"),
    "bad-migrate-strategy": (None, {"migrate": {"strategy": "manual"}}, "/migrate/strategy"),
    "bad-verify-client": (None, {"ingress": {"enroll": {"clientCert": {"verifyClient": "maybe"}}}},
                          "verifyClient"),
    "bad-quantity": (None, {"api": {"resources": {"limits": {"memory": "lots"}}}}, "memory"),
    "deployment-path-escape": (None, {"ca": {"deploymentSecret": {"name": "x", "items": [
        {"key": "k", "path": "../etc/passwd"}]}}}, "/ca/deploymentSecret/items/0/path"),
    # mode-dependent rules
    "production-without-database-secret": (PRODUCTION, {"database": {"existingSecret": {"name": ""}}},
                                           "/database/existingSecret/name"),
    "production-with-sqlite": (PRODUCTION, {"database": {"type": "sqlite"}}, "/database/type"),
    "production-without-hsm-pin-secret": (PRODUCTION, {"hsm": {"pin": {"existingSecret": ""}}},
                                          "/hsm/pin/existingSecret"),
    "production-without-admin-secret": (PRODUCTION, {"admin": {"existingSecret": ""}}, "/admin/existingSecret"),
    "production-running-init": (PRODUCTION, {"ca": {"init": {"enabled": True}}}, "/ca/init/enabled"),
    "external-db-without-secret": (None, {"database": {"type": "external"}}, "/database/existingSecret/name"),
    "sqlite-with-two-api-pods": (None, {"api": {"replicas": 2}}, "/api/replicas"),
    "sqlite-without-persistence": (None, {"persistence": {"enabled": False}}, "/persistence/enabled"),
    # ca.init makes the CA into the state volume: on emptyDirs each api pod would make its own
    "ceremony-on-empty-dir": (None, {"persistence": {"enabled": False}, "database": {"type": "postgresql"}},
                              "/persistence/enabled"),
    "vendor-module-with-softhsm-path": (None, {"hsm": {"type": "pkcs11"}}, "/hsm/modulePath"),
    "copy-module-without-image": (PRODUCTION, {"hsm": {"vendor": {"copyFromImage": {"image": ""}}}},
                                  "/hsm/vendor/copyFromImage/image"),
    "client-cert-without-ca-secret": (None, {"ingress": {"enabled": True, "enroll": {
        "clientCert": {"enabled": True}}}}, "caSecret"),
    "gateway-without-identity": (None, {"gateway": {"enabled": True}}, "/gateway/identitySecret"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_schema_rejects_bad_values_and_rendering_fails(case: str) -> None:
    values_file, overrides, where = REJECTED[case]
    with pytest.raises(helm_python.HelmValuesError) as info:
        render_templates(values_file, overrides)
    assert where in str(info.value), str(info.value)


@pytest.mark.parametrize("case", ["replicas-as-word", "production-without-database-secret", "unknown-top-level-key"])
def test_lint_reports_schema_violations(case: str) -> None:
    values_file, overrides, where = REJECTED[case]
    report = render.lint(values_file, overrides)
    assert report["errors"], report
    assert any(where in e for e in report["errors"]), report["errors"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_shipped_values_files_pass_the_schema(values_file: str) -> None:
    with helm_python.Chart.load(str(CHART_DIR)) as chart:
        chart.validate_schema(chart.merge_values(render.user_values(values_file)))


def test_schema_is_strict_at_every_level() -> None:
    """additionalProperties: false on every object schema except deliberately free-form maps
    (annotations, selectors, Kubernetes objects passed through, the ikepki.yaml/responder.yaml
    contents)."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    free_form = {
        "commonLabels", "annotations", "podAnnotations", "nodeSelector", "affinity", "file", "config",
        "volume", "livenessProbe", "namespaceSelector", "podSelector", "labels", "global", "requests", "limits",
        "valueFrom", "policy",
    }
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, child in node.get("properties", {}).items():
                if (isinstance(child, dict) and child.get("type") == "object" and "properties" not in child
                        and key not in free_form and "additionalProperties" not in child):
                    open_objects.append(f"{path}.{key}")
                walk(child, f"{path}.{key}")
            for key in ("$defs", "items", "allOf", "anyOf", "if", "then"):
                if key in node:
                    walk(node[key], f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")

    walk(schema, "")
    walk(schema["$defs"], "$defs")
    assert open_objects == []


def test_every_default_value_is_described_by_the_schema() -> None:
    """Walk values.yaml: each key has a schema property (the render already proves acceptance;
    this catches keys described only by accident through a free-form parent)."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing: list[str] = []

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref:
            return resolve(schema["$defs"][ref.rsplit("/", 1)[1]])
        return node

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        props = node.get("properties")
        if props is None:
            return  # free-form map
        for key, value in values.items():
            if key not in props:
                missing.append(f"{path}.{key}")
            elif isinstance(value, dict):
                walk(value, props[key], f"{path}.{key}")

    walk(defaults, schema, "")
    assert missing == []


def test_admin_secret_is_only_required_where_the_api_runs() -> None:
    manifests = render.render_manifests("values-ocsp-edge.yaml", {"admin": {"existingSecret": ""}})
    assert not render.find(manifests, "Secret")
