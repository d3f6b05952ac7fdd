"""The chart's workloads as containers: charts/ikepki rendered by Helm's engine with the demo
values (demo PostgreSQL StatefulSet, SoftHSM token and state on PVCs, migrate and init-ca as
init containers of the api pod) and the image from `make image`, then each pod run with podman
by tests/container/kube.py honouring its securityContext, volumes, Secrets and probes:
PostgreSQL (a Debian image built here: container/postgres), two api replicas, ocsp, worker.

Changed from the rendered manifests, and only this: the image references (values), api.replicas
2, gateway/ingress/ServiceMonitor off (no IKE peer, ingress controller or Prometheus here), one
ocsp replica instead of the HPA's two, and the api's ACME validation target (env additions:
the test's http-01 responder on podman's bridge gateway).

Both api pods start at once (their migrate and init-ca containers race on the fresh volume and
database: one CA, one init audit line). ACME enrollment through both replicas (certbot's `acme`
library), revocation through the admin API of the other replica, `openssl ocsp` against the ocsp
pod: good, then revoked; SIGKILL of one api container in the middle of enrollments: every
certificate a client received is in PostgreSQL byte for byte, the other replica keeps enrolling,
the restarted container serves the same CA and the audit chain verifies."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acme.acme_helpers import Http01Responder, acme_lib_enroll
from tests.conftest import free_port, require_binary
from tests.container.kube import Cluster, Pod
from tests.container.podman import bridge_gateway, inspect, ledger, podman
from tests.ha.ha_helpers import wait_for
from tests.helm.render import render_manifests

# the first test's setup may include a cold image build (minutes): above the suite's 300 s
pytestmark = [pytest.mark.interop, pytest.mark.timeout(1500)]
VALUES = "values-demo.yaml"


@dataclass
class Chart:
    cluster: Cluster
    pg: Pod
    apis: list[Pod]
    ocsp: Pod
    worker: Pod
    root: Path
    issuer: Path
    responder: Http01Responder
    eab: tuple[str, str]

    def replace_api(self, index: int) -> Pod:
        """What the kubelet does after a container dies: a new one from the same pod spec."""
        pod = self.cluster.start_pod("Deployment", "pki-ikepki-api", f"api-{index}-restarted", publish=("https",))
        pod.wait_ready()
        self.apis[index] = pod
        return pod


def _split(image: str) -> dict[str, str]:
    repository, _, tag = image.rpartition(":")
    return {"repository": repository, "tag": tag}


@pytest.fixture(scope="module")
def chart(image: str, postgres_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chart]:
    overrides = {
        "image": _split(image),
        "database": {"postgresql": {"image": _split(postgres_image)}},
        "api": {"replicas": 2},
        "gateway": {"enabled": False},
        "ingress": {"enabled": False},
        "metrics": {"serviceMonitor": {"enabled": False}},
    }
    manifests = render_manifests(VALUES, overrides)
    files = tmp_path_factory.mktemp("chart-files")
    gateway, http01 = bridge_gateway(), free_port()
    with ledger() as led:
        cluster = Cluster(manifests, led, files)
        assert cluster.obj("Deployment", "pki-ikepki-api")["spec"]["replicas"] == 2
        pg = cluster.start_pod("StatefulSet", "pki-ikepki-postgresql", "pg-0")
        pg.wait_ready()
        cluster.hosts["pki-ikepki-postgresql"] = pg.ip  # the Service
        cluster.extra_env["api"] = {"IKEPKI_ACME_HTTP01_PORT": str(http01),
                                    "IKEPKI_ACME_VALIDATION_HOSTS": f"*.test={gateway}",
                                    "IKEPKI_ACME_VALIDATION_TIMEOUT": "10"}
        # both replicas at once, as a new install with api.replicas 2 starts them: their migrate and
        # init-ca containers run together on the fresh volume and database; ikepki's locks let one
        # make the CA, the other waits and finds it (one "init" audit line, checked below)
        with ThreadPoolExecutor(2) as pool:
            api0, api1 = pool.map(lambda replica: cluster.start_pod("Deployment", "pki-ikepki-api", replica,
                                                                    publish=("https",)), ("api-0", "api-1"))
        api0.wait_ready()
        ocsp = cluster.start_pod("Deployment", "pki-ikepki-ocsp", "ocsp-0")
        worker = cluster.start_pod("Deployment", "pki-ikepki-worker", "worker-0")
        api1.wait_ready()
        ocsp.wait_ready()
        wait_for(lambda: worker.running() and "ikepki worker:" in podman("logs", worker.name), "the worker",
                 timeout=120)
        audit = [json.loads(line) for line in api0.exec("cat", "/var/lib/ikepki/audit.log").splitlines()]
        assert [a["action"] for a in audit].count("init") == 1, [a for a in audit if a["action"] == "init"]
        root, issuer = files / "root-ca.pem", files / "issuer.pem"
        root.write_text(api0.exec("cat", "/var/lib/ikepki/root-ca.pem"))
        issuer.write_text(api0.exec("cat", "/var/lib/ikepki/ca/ec.pem"))
        eab = json.loads(api0.exec("ikepki", "acme", "eab", "create", "--profile", "machine", "--identifiers",
                                   "*.test", "--json"))
        with Http01Responder(http01, host=gateway) as responder:  # on the bridge gateway, where the api validates
            yield Chart(cluster, pg, [api0, api1], ocsp, worker, root, issuer, responder,
                        (eab["kid"], eab["hmac_key"]))


def _enroll(chart: Chart, api: Pod, name: str) -> x509.Certificate:
    leaf = acme_lib_enroll(f"{api.loopback('https')}/acme/directory", str(chart.root), chart.eab,
                           chart.responder.tokens, name, user_agent="ikepki-container-test")
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(chart.issuer.read_bytes()))
    return leaf


def _ocsp(chart: Chart, leaf: x509.Certificate, work: Path) -> str:
    path = work / f"{leaf.serial_number:x}.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    chain = work / "chain.pem"
    chain.write_bytes(chart.root.read_bytes() + chart.issuer.read_bytes())
    proc = subprocess.run([require_binary("openssl"), "ocsp", "-issuer", str(chart.issuer), "-cert", str(path),
                           "-url", f"{chart.ocsp.url('http')}/ocsp", "-CAfile", str(chain), "-nonce"],
                          capture_output=True, text=True, timeout=60, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Response verify OK" in text, text
    return text.replace(str(path), "LEAF")


def test_rendered_security_context_is_what_runs(chart: Chart) -> None:
    for pod, uid in [(chart.pg, 999), *[(p, 10001) for p in (*chart.apis, chart.ocsp, chart.worker)]]:
        host = inspect(pod.name)["HostConfig"]
        assert host["ReadonlyRootfs"] is True, pod.name
        assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or []), pod.name
        status = pod.exec("cat", "/proc/1/status")
        assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status, (pod.name, status)
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status, (pod.name, status)
        denied = subprocess.run(["podman", "exec", pod.name, "touch", "/etc/x"], capture_output=True, text=True,
                                check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied


def test_acme_through_both_replicas_revocation_and_ocsp_from_the_ocsp_pod(chart: Chart, tmp_path: Path) -> None:
    first = _enroll(chart, chart.apis[0], "replica-a.test")
    second = _enroll(chart, chart.apis[1], "replica-b.test")
    assert "LEAF: good" in _ocsp(chart, first, tmp_path) and "LEAF: good" in _ocsp(chart, second, tmp_path)
    import httpx

    token = chart.cluster.secret("pki-ikepki-admin")["token"]
    with httpx.Client(verify=str(chart.root), timeout=60) as c:  # revoked through the *other* replica
        r = c.post(f"{chart.apis[1].loopback('https')}/admin/v1/revocations",
                   headers={"Authorization": f"Bearer {token}"},
                   json={"serials": [format(first.serial_number, "x")], "reason": "keyCompromise"})
    assert r.status_code == 200 and r.json()["revoked"], r.text
    wait_for(lambda: "LEAF: revoked" in _ocsp(chart, first, tmp_path), "the ocsp pod to answer revoked",
             timeout=90, interval=1)
    assert "LEAF: good" in _ocsp(chart, second, tmp_path)


def _stored(chart: Chart, serials: list[int]) -> dict[int, bytes]:
    password = chart.cluster.secret("pki-ikepki-postgresql")["password"]
    wanted = ",".join(f"'{s:x}'" for s in serials)
    out = podman("exec", "-e", f"PGPASSWORD={password}", chart.pg.name, "psql", "-h", "127.0.0.1", "-U", "ikepki",
                 "-d", "ikepki", "-At", "-F", " ", "-c",
                 f"select serial, encode(der, 'hex') from certificates where serial in ({wanted})")
    return {int(s, 16): bytes.fromhex(d) for s, d in (line.split() for line in out.splitlines() if line)}


def test_sigkill_one_api_mid_enrollment_loses_nothing(chart: Chart) -> None:
    victim, survivor = chart.apis
    received: list[x509.Certificate] = []
    lock, stop, killed = threading.Lock(), threading.Event(), threading.Event()

    def loop(api: Pod, tag: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                leaf = _enroll(chart, api, f"kill-{tag}-{n}.test")
            except Exception:
                if api is victim and killed.is_set():
                    return  # the connection died with the container: nothing was returned
                raise
            with lock:
                received.append(leaf)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(loop, victim, "a1"), pool.submit(loop, victim, "a2"),
                   pool.submit(loop, survivor, "b1"), pool.submit(loop, survivor, "b2")]
        wait_for(lambda: len(received) >= 4 or any(f.done() for f in futures), "enrollments on both replicas",
                 timeout=300, interval=0.1)
        killed.set()
        podman("kill", "--signal", "KILL", victim.name)
        at_kill = len(received)
        wait_for(lambda: len(received) >= at_kill + 3 or any(f.done() for f in futures),
                 "enrollment to continue on the other replica", timeout=300, interval=0.2)
        stop.set()
        for f in futures:
            f.result(timeout=300)
    assert inspect(victim.name)["State"]["ExitCode"] == 137
    stored = _stored(chart, [c.serial_number for c in received])
    assert stored == {c.serial_number: c.public_bytes(serialization.Encoding.DER) for c in received}
    restarted = chart.replace_api(0)
    assert restarted.exec("cat", "/var/lib/ikepki/root-ca.pem") == chart.root.read_text()
    _enroll(chart, restarted, "after-kill.test")
    out = subprocess.run(["podman", "exec", restarted.name, "ikepki", "audit", "verify"], capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sigterm_stops_every_workload_within_its_grace_period(chart: Chart) -> None:
    for pod in (chart.worker, chart.ocsp, chart.apis[1]):
        grace = int(pod.spec.get("terminationGracePeriodSeconds", 30))
        took = pod.stop()
        code = inspect(pod.name)["State"]["ExitCode"]
        assert code in (0, 143) and took < grace, (pod.name, code, took)
