"""Render charts/ikepki offline with Helm's own engine (helm-python-sdk, no helm binary,
no cluster) and pull out what each component would run.

`component_processes()` is the bridge to the Python side: per component (api, ocsp,
worker, migrate, gateway, plus init containers) it returns the container's command, args
and environment exactly as the chart renders them, and can resolve Kubernetes `$(VAR)`
references into a local argv, e.g. for a smoke test that runs the commands as processes::

    procs = component_processes(values_file="values.yaml")
    api = procs["api"]
    argv = api.argv({"IKEPKI_DIR": str(tmp_path)})   # ["ikepki", "serve", "--dir", "/tmp/...", ...]
    env = api.local_env({"IKEPKI_DIR": str(tmp_path), ...})
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "ikepki"
VALUES_FILES = ("values.yaml", "values-demo.yaml", "values-production.yaml", "values-ocsp-edge.yaml")
RELEASE = "pki"
NAMESPACE = "pki"

# Container name -> component name for the main containers and init containers.
_CONTAINER_COMPONENTS = {
    "api": "api",
    "ocsp": "ocsp",
    "worker": "worker",
    "gateway": "gateway",
    "migrate": "migrate",
    "init-ca": "init-ca",
}

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def _helm() -> Any:
    import helm_python  # imported lazily: the native library loads on first use

    return helm_python


@cache
def _chart() -> Any:
    return _helm().Chart.load(str(CHART_DIR))


def load_values_file(name: str) -> dict[str, Any]:
    """A values file from the chart directory ("values-demo.yaml") as a dict."""
    data = yaml.safe_load((CHART_DIR / name).read_text()) or {}
    assert isinstance(data, dict)
    return data


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge like repeated `helm -f`: maps recurse, everything else is replaced, None deletes."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def user_values(values_file: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """User-supplied values: a chart values file (None/"values.yaml" = chart defaults) + overrides."""
    values: dict[str, Any] = {}
    if values_file and values_file != "values.yaml":
        values = load_values_file(values_file)
    if overrides:
        values = merge_values(values, overrides)
    return values


def render_templates(
    values_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    is_upgrade: bool = False,
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce.

    Raises helm_python.HelmValuesError when values.schema.json rejects the values and
    helm_python.HelmRenderError when a template fails.
    """
    key = json.dumps([values_file, overrides, name, namespace, is_upgrade], sort_keys=True)
    return dict(_render_cached(key))


@cache
def _render_cached(key: str) -> dict[str, str]:
    values_file, overrides, name, namespace, is_upgrade = json.loads(key)
    rendered: dict[str, str] = _chart().render(
        user_values(values_file, overrides),
        name=name,
        namespace=namespace,
        is_install=not is_upgrade,
        is_upgrade=is_upgrade,
    )
    return rendered


def render_manifests(
    values_file: str | None = None, overrides: Mapping[str, Any] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (NOTES.txt excluded), in template order."""
    manifests: list[dict[str, Any]] = []
    for path, text in sorted(render_templates(values_file, overrides, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=_Loader):
            if doc:
                manifests.append(doc)
    return manifests


def render_notes(values_file: str | None = None, overrides: Mapping[str, Any] | None = None) -> str:
    for path, text in render_templates(values_file, overrides).items():
        if path.endswith("NOTES.txt"):
            return text
    return ""


def lint(values_file: str | None = None, overrides: Mapping[str, Any] | None = None,
         *, kube_version: str | None = None) -> dict[str, Any]:
    """`helm lint --strict` through the SDK; returns the SDK's report dict."""
    report: dict[str, Any] = _helm().lint(
        str(CHART_DIR), user_values(values_file, overrides), strict=True, namespace=NAMESPACE,
        kube_version=kube_version,
    )
    return report


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        m for m in manifests
        if m.get("kind") == kind and (name is None or m["metadata"]["name"] == name)
    ]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment, StatefulSet or Job."""
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


@dataclass(frozen=True)
class ComponentProcess:
    """What one container of the chart runs."""

    component: str
    workload: str          # "Deployment/pki-ikepki-api", "Job/pki-ikepki-migrate"
    container: str
    init: bool             # an init container (runs before the main one)
    command: list[str]
    args: list[str]
    env: dict[str, str | None]                  # literal values; None for valueFrom
    env_from: dict[str, dict[str, Any]] = field(default_factory=dict)   # name -> valueFrom
    ports: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    security_context: dict[str, Any] = field(default_factory=dict)
    hook: str | None = None  # helm.sh/hook annotation of the workload, if any

    def local_env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for running this process locally.

        Literal values are resolved in order (Kubernetes dependent-variable semantics);
        `overrides` replaces values (e.g. IKEPKI_DIR -> a temp dir, IKEPKI_HSM_PIN_FILE ->
        a local file) and supplies the secret-backed ones (IKEPKI_DATABASE_URL)."""
        overrides = dict(overrides or {})
        resolved: dict[str, str] = {}
        for key, value in self.env.items():
            if key in overrides:
                resolved[key] = overrides[key]
            elif value is not None:
                resolved[key] = _expand(value, resolved)
        for key, value in overrides.items():
            resolved.setdefault(key, value)
        return resolved

    def argv(self, overrides: Mapping[str, str] | None = None) -> list[str]:
        """command + args with `$(VAR)` references expanded from local_env(overrides)."""
        env = self.local_env(overrides)
        return [_expand(part, env) for part in [*self.command, *self.args]]


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, text)


def _process(component: str, obj: Mapping[str, Any], container: Mapping[str, Any], init: bool) -> ComponentProcess:
    env: dict[str, str | None] = {}
    env_from: dict[str, dict[str, Any]] = {}
    for item in container.get("env") or []:
        if "valueFrom" in item:
            env[item["name"]] = None
            env_from[item["name"]] = item["valueFrom"]
        else:
            env[item["name"]] = str(item.get("value", ""))
    return ComponentProcess(
        component=component,
        workload=f"{obj['kind']}/{obj['metadata']['name']}",
        container=container["name"],
        init=init,
        command=[str(c) for c in container.get("command") or []],
        args=[str(a) for a in container.get("args") or []],
        env=env,
        env_from=env_from,
        ports=list(container.get("ports") or []),
        volume_mounts=list(container.get("volumeMounts") or []),
        probes={k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in container},
        security_context=dict(container.get("securityContext") or {}),
        hook=(obj["metadata"].get("annotations") or {}).get("helm.sh/hook"),
    )


def component_processes(
    values_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    manifests: list[dict[str, Any]] | None = None,
) -> dict[str, ComponentProcess]:
    """Per component, the rendered container command/args/env.

    Keys: "api", "ocsp", "worker", "gateway", "migrate" (the hook Job's container, or the
    api pod's init container when migrations run as an init container), "init-ca".
    Components that the values disable are absent.
    """
    if manifests is None:
        manifests = render_manifests(values_file, overrides)
    processes: dict[str, ComponentProcess] = {}
    for obj in manifests:
        if obj.get("kind") not in ("Deployment", "StatefulSet", "Job"):
            continue
        labels = obj["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/component") == "postgresql":
            continue
        spec = pod_spec(obj)
        for init, containers in ((True, spec.get("initContainers") or []), (False, spec["containers"])):
            for container in containers:
                component = _CONTAINER_COMPONENTS.get(container["name"])
                if component is None:
                    continue  # e.g. the vendor PKCS#11 module copier
                # A hook Job wins over an init container of the same name.
                if component in processes and processes[component].hook and init:
                    continue
                processes[component] = _process(component, obj, container, init)
    return processes
