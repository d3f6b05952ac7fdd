"""The contract with the Python side: exact commands/args per component, the IKEPKI_*
environment, probes on /healthz and /readyz, hardened security contexts, secrets as files,
network exposure (OCSP/CRL public, admin restricted), EST client-cert forwarding."""

from __future__ import annotations

from typing import Any

import pytest
import render
from render import VALUES_FILES, component_processes, find, pod_spec, render_manifests, render_notes

STATE_DIR = "/var/lib/ikepki"

# The CLI contracts (see charts/ikepki/README.md); $(IKEPKI_DIR) is expanded by Kubernetes.
EXPECTED_ARGV = {
    "api": ["ikepki", "serve", "--dir", "$(IKEPKI_DIR)", "--host", "0.0.0.0", "--https-port", "8443",
            "--http-port", "8080"],
    "ocsp": ["ikepki", "ocsp", "serve", "--dir", "$(IKEPKI_DIR)", "--host", "0.0.0.0", "--port", "8080"],
    "worker": ["ikepki", "worker", "--dir", "$(IKEPKI_DIR)", "--host", "0.0.0.0", "--port", "8080"],
    "migrate": ["ikepki", "db", "upgrade", "--dir", "$(IKEPKI_DIR)"],
    "gateway": ["ikepki", "responder", "serve", "--config", "/etc/ikepki/responder.yaml"],
}

COMPONENTS_BY_FILE = {
    "values.yaml": {"api", "ocsp", "worker", "migrate", "init-ca"},
    "values-demo.yaml": {"api", "ocsp", "worker", "migrate", "init-ca", "gateway"},
    "values-production.yaml": {"api", "ocsp", "worker", "migrate"},
    "values-ocsp-edge.yaml": {"ocsp"},
}


@pytest.fixture(scope="module", params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_manifests(request.param)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _containers(manifests: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    out = []
    for w in manifests:
        if w["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = pod_spec(w)
            out += [(w, c, True) for c in spec.get("initContainers", [])]
            out += [(w, c, False) for c in spec["containers"]]
    return out


# --- commands -----------------------------------------------------------------------------

def test_components_and_exact_commands(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_file, manifests = rendered
    procs = component_processes(manifests=manifests)
    assert set(procs) == COMPONENTS_BY_FILE[values_file]
    for name, proc in procs.items():
        if name in EXPECTED_ARGV:
            assert [*proc.command, *proc.args] == EXPECTED_ARGV[name], (values_file, name)
    for name in ("api", "ocsp", "worker", "gateway"):
        if name in procs:
            assert procs[name].workload == f"Deployment/pki-ikepki-{name}"
            assert not procs[name].init


def test_migrate_is_a_pre_install_pre_upgrade_hook_job_with_an_external_database() -> None:
    manifests = render_manifests("values-production.yaml")
    job = find(manifests, "Job", "pki-ikepki-migrate")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Everything the hook pod uses must exist before the release's own objects.
    hook_cm = find(manifests, "ConfigMap", "pki-ikepki-migrate")[0]
    assert hook_cm["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"])
    spec = pod_spec(job)
    assert "serviceAccountName" not in spec and spec["automountServiceAccountToken"] is False
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"])
    proc = component_processes(manifests=manifests)["migrate"]
    assert proc.workload == "Job/pki-ikepki-migrate" and proc.hook == "pre-install,pre-upgrade"
    assert proc.env_from["IKEPKI_DATABASE_URL"] == {"secretKeyRef": {"name": "ikepki-database", "key": "url"}}
    assert "IKEPKI_HSM_PIN_FILE" not in proc.env, "migrations need no HSM"
    # no api init container doing the same
    api = find(manifests, "Deployment", "pki-ikepki-api")[0]
    assert "initContainers" not in pod_spec(api) or all(
        c["name"] != "migrate" for c in pod_spec(api)["initContainers"])


def test_in_chart_databases_migrate_in_an_init_container_before_the_api() -> None:
    for values_file in ("values.yaml", "values-demo.yaml"):
        manifests = render_manifests(values_file)
        assert not find(manifests, "Job")
        api = find(manifests, "Deployment", "pki-ikepki-api")[0]
        names = [c["name"] for c in pod_spec(api)["initContainers"]]
        assert names == ["migrate", "init-ca"], values_file


def test_init_ca_runs_ikepki_init_only_once() -> None:
    proc = component_processes()["init-ca"]
    assert proc.command == ["/bin/sh", "-c"]
    # "only once" is ikepki's: init decides under its lock whether a deployment exists (--if-missing)
    assert proc.args == ['exec ikepki init --dir "$IKEPKI_DIR" --if-missing']
    assert proc.env["IKEPKI_HSM_SO_PIN_FILE"] == "/run/secrets/ikepki/hsm-so/so-pin"
    assert "init-ca" not in component_processes("values-production.yaml")


def test_helper_resolves_argv_and_env_for_local_runs(tmp_path: Any) -> None:
    procs = component_processes("values-demo.yaml")
    api = procs["api"]
    assert api.argv({"IKEPKI_DIR": str(tmp_path)}) == [
        "ikepki", "serve", "--dir", str(tmp_path), "--host", "0.0.0.0", "--https-port", "8443", "--http-port", "8080"]
    env = procs["worker"].local_env({"IKEPKI_DIR": str(tmp_path), "DEMO_POSTGRESQL_PASSWORD": "pw"})
    assert env["IKEPKI_DIR"] == str(tmp_path)
    assert env["IKEPKI_DATABASE_URL"] == "postgresql+psycopg://ikepki:pw@pki-ikepki-postgresql:5432/ikepki"
    assert procs["worker"].env_from["DEMO_POSTGRESQL_PASSWORD"]["secretKeyRef"]["name"] == "pki-ikepki-postgresql"


# --- environment --------------------------------------------------------------------------

def test_core_environment(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _values_file, manifests = rendered
    procs = component_processes(manifests=manifests)
    for name in ("api", "ocsp", "worker", "init-ca"):
        if name not in procs:
            continue
        env = procs[name].env
        assert env["IKEPKI_DIR"] == STATE_DIR
        assert env["IKEPKI_HSM_MODULE"].endswith(".so")
        assert env["IKEPKI_HSM_TOKEN_LABEL"]
        assert env["IKEPKI_HSM_PIN_FILE"] == "/run/secrets/ikepki/hsm/pin"
        # AIA/CDP URLs: relying parties fetch them over plain HTTP (RFC 5280 §4.2.1.13, RFC 6960)
        assert env["IKEPKI_PUBLIC_BASE_URL"].startswith("http://")
        assert env["IKEPKI_OCSP_BASE_URL"].startswith("http://")
        assert "IKEPKI_CONFIG" not in env, "no config file unless config.file is set"
        assert ("SOFTHSM2_CONF" in env) == (env["IKEPKI_HSM_MODULE"] == "/usr/lib/softhsm/libsofthsm2.so")
    if "api" in procs:
        assert procs["api"].env["IKEPKI_ADMIN_TOKEN_FILE"] == "/run/secrets/ikepki/admin/token"
    for name in ("ocsp", "worker"):
        if name in procs:
            assert "IKEPKI_ADMIN_TOKEN_FILE" not in procs[name].env


def test_database_url_per_database_type() -> None:
    sqlite = component_processes()
    assert all("IKEPKI_DATABASE_URL" not in p.env for p in sqlite.values()), "SQLite default lives in IKEPKI_DIR"
    prod = component_processes("values-production.yaml")
    for name in ("api", "ocsp", "worker", "migrate"):
        assert prod[name].env_from["IKEPKI_DATABASE_URL"]["secretKeyRef"] == {"name": "ikepki-database", "key": "url"}
    demo = component_processes("values-demo.yaml")
    for name in ("api", "ocsp", "worker", "migrate", "init-ca"):
        assert demo[name].env["IKEPKI_DATABASE_URL"].startswith("postgresql+psycopg://ikepki:$(DEMO_POSTGRESQL_")
    assert "IKEPKI_DATABASE_URL" not in demo["gateway"].env, "the gateway has no database"


def test_softhsm_demo_token_on_a_persistent_volume_with_pin_from_a_secret() -> None:
    manifests = render_manifests()
    conf = find(manifests, "ConfigMap", "pki-ikepki-config")[0]["data"]["softhsm2.conf"]
    assert "directories.tokendir = /var/lib/ikepki/tokens" in conf
    api = find(manifests, "Deployment", "pki-ikepki-api")[0]
    spec = pod_spec(api)
    volumes = {v["name"]: v for v in spec["volumes"]}
    container = spec["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/var/lib/ikepki/tokens"]]["persistentVolumeClaim"]["claimName"] == "pki-ikepki-softhsm"
    assert volumes[mounts[STATE_DIR]]["persistentVolumeClaim"]["claimName"] == "pki-ikepki-state"
    pin_volume = volumes[mounts["/run/secrets/ikepki/hsm"]]
    assert pin_volume["secret"]["secretName"] == "pki-ikepki-hsm-pin"
    assert pin_volume["secret"]["items"] == [{"key": "pin", "path": "pin"}]
    assert _env(container)["SOFTHSM2_CONF"]["value"] == "/etc/ikepki/softhsm2.conf"
    assert mounts["/etc/ikepki"] == "config"
    pin_secret = find(manifests, "Secret", "pki-ikepki-hsm-pin")[0]
    assert pin_secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(pin_secret["stringData"]["pin"]) >= 16
    for pvc in find(manifests, "PersistentVolumeClaim"):
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_secrets_are_never_env_values_or_configmap_data(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_file, manifests = rendered
    secret_values = {v for s in find(manifests, "Secret") for v in s.get("stringData", {}).values()}
    for _workload, container, _ in _containers(manifests):
        for env in container.get("env", []):
            value = env.get("value", "")
            assert not any(secret and secret in value for secret in secret_values), (values_file, env["name"])
            if any(word in env["name"] for word in ("PIN", "PASSWORD", "TOKEN")) and "valueFrom" not in env:
                assert env["name"].endswith(("_FILE", "_LABEL")), (values_file, env["name"])
    for cm in find(manifests, "ConfigMap"):
        for text in (cm.get("data") or {}).values():
            assert not any(secret and secret in text for secret in secret_values)


def test_production_brings_its_own_secrets() -> None:
    manifests = render_manifests("values-production.yaml")
    assert not find(manifests, "Secret")
    api = component_processes(manifests=manifests)["api"]
    mounts = {m["mountPath"]: m for m in api.volume_mounts}
    assert mounts["/opt/pkcs11"]["readOnly"] is True
    assert mounts["/etc/pkcs11"]["readOnly"] is True
    assert api.env["IKEPKI_HSM_MODULE"] == "/opt/pkcs11/lib/libCryptoki2_64.so"
    assert api.env["ChrystokiConfigurationPath"] == "/etc/pkcs11"
    assert "SOFTHSM2_CONF" not in api.env
    assert mounts[f"{STATE_DIR}/deployment.yaml"]["subPath"] == "deployment.yaml"
    assert mounts[f"{STATE_DIR}/tls/server.key"]["readOnly"] is True
    spec = pod_spec(find(manifests, "Deployment", "pki-ikepki-api")[0])
    copier = spec["initContainers"][0]
    assert copier["name"] == "copy-pkcs11-module"
    assert copier["command"] == ["cp", "-R", "/usr/safenet/lunaclient/.", "/pkcs11-module/"]
    assert {v["name"]: v for v in spec["volumes"]}["state"] == {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}}


# --- pod hardening ------------------------------------------------------------------------

def test_security_contexts(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_file, manifests = rendered
    for workload, container, _ in _containers(manifests):
        where = (values_file, workload["metadata"]["name"], container["name"])
        spec = pod_spec(workload)
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["privileged"] is False, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] != "postgresql":
            assert pod_sc["runAsUser"] == sc["runAsUser"] == 10001, where
            assert pod_sc["runAsGroup"] == pod_sc["fsGroup"] == 10001, where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if container["name"] not in ("copy-pkcs11-module", "wait-for-ca"):  # cp / test only
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_gateway_binds_low_ports_without_capabilities() -> None:
    gateway = find(render_manifests("values-demo.yaml"), "Deployment", "pki-ikepki-gateway")[0]
    spec = pod_spec(gateway)
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in spec["securityContext"]["sysctls"]
    assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {(p["containerPort"], p["protocol"]) for p in spec["containers"][0]["ports"]} == {
        (500, "UDP"), (4500, "UDP"), (8444, "TCP")}


def test_resources_on_every_container(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _values_file, manifests = rendered
    for _workload, container, _ in _containers(manifests):
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], container["name"]
        assert resources["limits"]["memory"], container["name"]


def test_probes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _values_file, manifests = rendered
    procs = component_processes(manifests=manifests)
    for name in ("api", "ocsp", "worker"):
        if name not in procs:
            continue
        probes = procs[name].probes
        assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert probes["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        ports = {p["name"]: p["containerPort"] for p in procs[name].ports}
        assert ports["http"] == 8080
        if name == "api":
            assert ports["https"] == 8443
        if name == "worker":
            assert set(ports) == {"http"}
    if "gateway" in procs:
        assert procs["gateway"].probes["livenessProbe"]["tcpSocket"] == {"port": "push"}
        assert procs["gateway"].probes["readinessProbe"]["tcpSocket"] == {"port": "push"}


def test_pod_disruption_budgets_never_block_a_drain(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_file, manifests = rendered
    deployments = {d["metadata"]["name"] for d in find(manifests, "Deployment")}
    pdbs = {p["metadata"]["name"]: p for p in find(manifests, "PodDisruptionBudget")}
    assert set(pdbs) == deployments, values_file
    for pdb in pdbs.values():
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


# --- network exposure ---------------------------------------------------------------------

def _policy(manifests: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return find(manifests, "NetworkPolicy", f"pki-ikepki-{component}")[0]


def test_network_policies_public_ocsp_restricted_admin() -> None:
    manifests = render_manifests("values-demo.yaml")
    ocsp = _policy(manifests, "ocsp")["spec"]
    assert ocsp["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}], "OCSP is public"

    api = _policy(manifests, "api")["spec"]
    public = [r for r in api["ingress"] if "from" not in r]
    assert public == [{"ports": [{"port": "http", "protocol": "TCP"}]}], "only the plain-HTTP listener is public"
    (https_rule,) = [r for r in api["ingress"] if {"port": "https", "protocol": "TCP"} in r.get("ports", [])]
    peers = https_rule["from"]
    assert peers[0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }
    assert {"podSelector": {"matchLabels": {"ikepki.io/admin-client": "true"}}} in peers

    worker = _policy(manifests, "worker")["spec"]
    assert worker["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}], "health/metrics only"
    gateway = _policy(manifests, "gateway")["spec"]
    push = next(r for r in gateway["ingress"] if {"port": "push", "protocol": "TCP"} in r["ports"])
    assert push["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    pg = find(manifests, "NetworkPolicy", "pki-ikepki-postgresql")[0]["spec"]
    assert pg["ingress"][0]["from"], "demo PostgreSQL is not public"


def test_production_admin_peers_and_egress() -> None:
    manifests = render_manifests("values-production.yaml")
    api = _policy(manifests, "api")["spec"]
    assert api["policyTypes"] == ["Ingress", "Egress"]
    https_rule = next(r for r in api["ingress"] if "from" in r)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pki-admin"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pki-admin-console"}}} in https_rule["from"]
    assert any(r["ports"][0]["port"] == 53 for r in api["egress"])
    assert any(r["ports"][0]["port"] == 1792 for r in api["egress"]), "HSM appliance reachable"


def test_ingress_forwards_client_certificates_for_est() -> None:
    manifests = render_manifests("values-demo.yaml")
    enroll = find(manifests, "Ingress", "pki-ikepki-enroll")[0]
    annotations = enroll["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "optional_no_ca"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-secret"] == "pki/pki-est-client-ca"
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    paths = {p["path"]: p["backend"]["service"] for p in enroll["spec"]["rules"][0]["http"]["paths"]}
    assert set(paths) == {"/acme", "/.well-known/est", "/scep", "/ca"}
    assert all(b == {"name": "pki-ikepki-api", "port": {"name": "https"}} for b in paths.values())
    assert not any(p.startswith("/admin") for p in paths), "admin API is not routed"
    # the header name ikepki trusts is the one ingress-nginx sends
    api = component_processes(manifests=manifests)["api"]
    assert api.env["IKEPKI_EST_TRUSTED_PROXY_HEADER"] == "ssl-client-cert"

    public = find(manifests, "Ingress", "pki-ikepki-public")[0]
    assert public["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "false"
    public_paths = {p["path"]: p["backend"]["service"]["name"] for p in public["spec"]["rules"][0]["http"]["paths"]}
    assert public_paths == {"/ocsp": "pki-ikepki-ocsp", "/crl": "pki-ikepki-api", "/ca": "pki-ikepki-api",
                            "/scep": "pki-ikepki-api"}


def test_no_trusted_proxy_header_without_client_cert_forwarding() -> None:
    api = component_processes()["api"]
    assert "IKEPKI_EST_TRUSTED_PROXY_HEADER" not in api.env


def test_services_and_metrics() -> None:
    manifests = render_manifests("values-demo.yaml")
    api = find(manifests, "Service", "pki-ikepki-api")[0]
    assert {(p["name"], p["port"]) for p in api["spec"]["ports"]} == {("https", 8443), ("http", 8080)}
    ocsp = find(manifests, "Service", "pki-ikepki-ocsp")[0]
    assert [(p["name"], p["port"], p["targetPort"]) for p in ocsp["spec"]["ports"]] == [("http", 80, "http")]
    gateway = find(manifests, "Service", "pki-ikepki-gateway")[0]
    assert {(p["port"], p["protocol"]) for p in gateway["spec"]["ports"]} == {(500, "UDP"), (4500, "UDP")}
    assert gateway["spec"]["type"] == "LoadBalancer"
    push = find(manifests, "Service", "pki-ikepki-gateway-push")[0]
    assert [(p["port"], p["protocol"]) for p in push["spec"]["ports"]] == [(8444, "TCP")]
    assert push["spec"]["type"] == "ClusterIP"
    monitor = find(manifests, "ServiceMonitor")[0]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for name in ("api", "ocsp"):
        annotations = find(manifests, "Deployment", f"pki-ikepki-{name}")[0]["spec"]["template"]["metadata"][
            "annotations"]
        assert annotations["prometheus.io/port"] == "8080" and annotations["prometheus.io/path"] == "/metrics"


def test_rwo_volumes_colocate_ocsp_and_worker_with_the_api() -> None:
    manifests = render_manifests()
    for name in ("ocsp", "worker"):
        affinity = pod_spec(find(manifests, "Deployment", f"pki-ikepki-{name}")[0])["affinity"]
        term = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    api = find(manifests, "Deployment", "pki-ikepki-api")[0]
    assert api["spec"]["strategy"] == {"type": "Recreate"}
    prod = render_manifests("values-production.yaml")
    assert "affinity" not in pod_spec(find(prod, "Deployment", "pki-ikepki-ocsp")[0])


# --- NOTES --------------------------------------------------------------------------------

def test_notes_tell_how_to_get_the_root_and_the_acme_url() -> None:
    notes = render_notes()
    assert "kubectl -n pki exec deploy/pki-ikepki-api -c api -- cat /var/lib/ikepki/root-ca.pem" in notes
    assert "/ca/root.pem" in notes and "/crl/" in notes
    assert "https://pki-ikepki-api.pki.svc:8443/acme/directory" in notes
    assert "ikepki admin token --name ops --role admin --dir /var/lib/ikepki" in notes
    demo = render_notes("values-demo.yaml")
    assert "http://ocsp.demo.example.internal/ca/root.pem" in demo
    assert "https://pki.demo.example.internal/acme/directory" in demo
    assert "kubectl -n pki create secret generic pki-est-client-ca --from-file=ca.crt=root-ca.pem" in demo
    edge = render.render_notes("values-ocsp-edge.yaml")
    assert "root-ca.pem" not in edge and "http://ocsp-edge.example.internal/ocsp" in edge


def _responder_serve_options() -> set[str] | None:
    """Parameter names of gateway/cli.py's `serve` command, read statically (no import)."""
    import ast

    source = render.REPO_ROOT / "gateway" / "cli.py"
    if not source.exists():
        return None
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "serve":
            return {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
    return None


def test_responder_yaml_uses_the_responders_option_names() -> None:
    import yaml

    manifests = render_manifests("values-demo.yaml", {"gateway": {"policy": {"rules": [{"name": "any"}]}}})
    data = find(manifests, "ConfigMap", "pki-ikepki-gateway")[0]["data"]
    config = yaml.safe_load(data["responder.yaml"])
    assert config["listen"].endswith(":500") and config["nat_port"] == 4500
    assert config["push_listen"].endswith(":8444")
    assert config["push_tls_cert"].startswith("/etc/ikepki/gateway/"), "the push listener is HTTPS by default"
    assert not config.get("push_insecure_http")
    assert config["control"].startswith("/tmp/"), "the root filesystem is read-only"
    assert config["policy"] == "/etc/ikepki/policy.yaml" and "rules" in yaml.safe_load(data["policy.yaml"])
    options = _responder_serve_options()
    if options is None:
        pytest.skip("gateway/cli.py has no serve command yet")
    assert set(config) <= options, set(config) - options


def test_api_background_workers_switch() -> None:
    assert "--no-workers" not in component_processes()["api"].args
    api = component_processes(None, {"api": {"backgroundWorkers": False}})["api"]
    assert [*api.command, *api.args] == [*EXPECTED_ARGV["api"], "--no-workers"]


def test_worker_health_listener_is_on_by_default_and_can_be_switched_off() -> None:
    manifests = render_manifests(None)
    worker = component_processes(manifests=manifests)["worker"]
    assert [*worker.command, *worker.args] == EXPECTED_ARGV["worker"]
    assert worker.probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert worker.probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert _policy(manifests, "worker")["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]

    exec_probe = {"exec": {"command": ["/bin/sh", "-c", "test -e /tmp/alive"]}, "periodSeconds": 30}
    off = render_manifests(None, {"worker": {"health": {"enabled": False}, "livenessProbe": exec_probe}})
    worker = component_processes(manifests=off)["worker"]
    assert [*worker.command, *worker.args] == ["ikepki", "worker", "--dir", "$(IKEPKI_DIR)"]
    assert worker.probes == {"livenessProbe": exec_probe} and worker.ports == []
    assert _policy(off, "worker")["spec"]["ingress"] == []


def test_ocsp_and_worker_wait_for_the_demo_ca() -> None:
    manifests = render_manifests()
    for name in ("ocsp", "worker"):
        (wait,) = pod_spec(find(manifests, "Deployment", f"pki-ikepki-{name}")[0])["initContainers"]
        assert wait["name"] == "wait-for-ca"
        assert wait["args"] == ['until test -e "$IKEPKI_DIR/deployment.yaml" && ! test -e '
                                '"$IKEPKI_DIR/init-incomplete"; do echo "waiting for ikepki init in the api pod"; '
                                'sleep 3; done']
        assert wait["volumeMounts"] == [{"name": "state", "mountPath": STATE_DIR, "readOnly": True}]
    both = render_manifests(None, {"hsm": {"type": "pkcs11", "modulePath": "/opt/pkcs11/lib/vendor.so", "vendor": {
        "copyFromImage": {"enabled": True, "image": "vendor/hsm-client:1"}}}})
    inits = pod_spec(find(both, "Deployment", "pki-ikepki-ocsp")[0])["initContainers"]
    assert [c["name"] for c in inits] == ["copy-pkcs11-module", "wait-for-ca"]
