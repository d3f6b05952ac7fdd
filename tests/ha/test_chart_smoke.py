"""Chart smoke test: the `migrate`, `api`, `ocsp` and `worker` containers of the production values
(external PostgreSQL), rendered by Helm's own engine (tests/helm/render.py), run as local processes
with their rendered command, args and environment. Substituted, and only these: the state
directory (IKEPKI_DIR), ports and listen address, the Secret-backed values (database URL, HSM PIN
file, admin token file), the HSM (SoftHSM of a deployment made by `ikepki init` against that
database instead of the vendor module and its `ikepki-prod` token), the public/OCSP base URL (the
local ocsp process) and, for the api only, the test's ACME http-01 port and address map. Then
certbot's `acme` ClientV2 enrolls through the api and `openssl ocsp` checks the certificate at the
OCSP URL the certificate itself names, before and after a revocation through the admin API."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.acme.acme_helpers import Http01Responder, acme_lib_enroll
from tests.conftest import IKEPKI, free_port, require_binary
from tests.ha.deployments import HaBase
from tests.ha.ha_helpers import create_eab, wait_for
from tests.helm.render import ComponentProcess, component_processes

VALUES = "values-production.yaml"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def localize(component: ComponentProcess, overrides: dict[str, str], flags: dict[str, str]) -> tuple[list[str], dict]:
    """The rendered argv/env with local substitutions; every substituted flag must be rendered."""
    argv = component.argv(overrides)
    assert argv[0] == "ikepki", argv
    argv[0] = IKEPKI
    for flag, value in flags.items():
        assert flag in argv, (component.component, flag, argv)
        argv[argv.index(flag) + 1] = value
    missing = set(component.env_from) - set(overrides)
    assert not missing, f"{component.component}: secret-backed env not substituted: {missing}"
    env = component.local_env(overrides)
    assert set(env) == set(component.env) | set(overrides), (component.component, env)
    return argv, env


def spawn(name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Proc:
    import os

    log = logdir / f"{name}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("IKEPKI_") and k != "SOFTHSM2_CONF"}
    proc = subprocess.Popen(argv, env={**base, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Proc(name, proc, log)


def probe_path(component: ComponentProcess, probe: str) -> str:
    get = component.probes[probe]["httpGet"]
    assert get["port"] in ("http", 8080), get
    return str(get["path"])


@dataclass
class Chart:
    dir: Path
    url: str
    api_https: str
    api_http: str
    ocsp_url: str
    http01_port: int
    procs: dict[str, Proc]


@pytest.fixture(scope="module")
def chart(ha_base: HaBase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chart]:
    base = tmp_path_factory.mktemp("chart")
    directory, url = ha_base.clone("ha_chart", base / "state")
    (directory / "ikepki.yaml").unlink()  # production: no config file, IKEPKI_* variables only
    procs = component_processes(VALUES)
    secrets = {"IKEPKI_DIR": str(directory), "IKEPKI_DATABASE_URL": url,
               "IKEPKI_HSM_MODULE": SOFTHSM, "IKEPKI_HSM_TOKEN_LABEL": "ikepki",
               "IKEPKI_HSM_PIN_FILE": str(directory / "hsm-pin"),
               "IKEPKI_ADMIN_TOKEN_FILE": str(directory / "admin-token")}
    https_port, api_http, ocsp_port, http01 = free_port(), free_port(), free_port(), free_port()
    worker_port = free_port()
    public = f"http://127.0.0.1:{ocsp_port}"
    common = {**secrets, "IKEPKI_PUBLIC_BASE_URL": public, "IKEPKI_OCSP_BASE_URL": public}
    started: dict[str, Proc] = {}
    try:
        argv, env = localize(procs["migrate"], {k: secrets[k] for k in ("IKEPKI_DIR", "IKEPKI_DATABASE_URL")}, {})
        mig = spawn("migrate", argv, env, base)
        assert mig.process.wait(180) == 0, mig.output()
        acme_env = {"IKEPKI_ACME_HTTP01_PORT": str(http01), "IKEPKI_ACME_VALIDATION_HOSTS": "*.test=127.0.0.1",
                    "IKEPKI_ACME_VALIDATION_TIMEOUT": "5"}
        argv, env = localize(procs["api"], {**common, **acme_env}, {"--host": "127.0.0.1",
                                                                     "--https-port": str(https_port),
                                                                     "--http-port": str(api_http)})
        started["api"] = spawn("api", argv, env, base)
        argv, env = localize(procs["ocsp"], common, {"--host": "127.0.0.1", "--port": str(ocsp_port)})
        started["ocsp"] = spawn("ocsp", argv, env, base)
        argv, env = localize(procs["worker"], common, {"--host": "127.0.0.1", "--port": str(worker_port)})
        started["worker"] = spawn("worker", argv, env, base)
        for name, port in (("api", api_http), ("ocsp", ocsp_port), ("worker", worker_port)):
            probe = f"http://127.0.0.1:{port}{probe_path(procs[name], 'readinessProbe')}"

            def ready(proc: Proc = started[name], probe: str = probe) -> bool:
                return _ready(proc, probe)

            wait_for(ready, f"{name} readiness", timeout=120)
        wait_for(lambda: _alive(started["worker"]) and "ikepki worker:" in started["worker"].output(),
                 "worker start", timeout=120)
        live = httpx.get(f"http://127.0.0.1:{worker_port}{probe_path(procs['worker'], 'livenessProbe')}", timeout=5)
        assert (live.status_code, live.text) == (200, "ok\n"), live.text  # push + CRL publisher tasks alive
        yield Chart(directory, url, f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{api_http}", public, http01,
                    started)
    finally:
        for proc in started.values():
            if proc.process.poll() is None:
                proc.process.terminate()
                try:
                    proc.process.wait(15)
                except subprocess.TimeoutExpired:
                    proc.process.kill()
                    proc.process.wait(5)


def _alive(proc: Proc) -> bool:
    if proc.process.poll() is not None:
        raise AssertionError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.output()}")
    return True


def _ready(proc: Proc, url: str) -> bool:
    _alive(proc)
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _acme_enroll(chart: Chart, name: str) -> x509.Certificate:
    with Http01Responder(chart.http01_port) as responder:
        return acme_lib_enroll(f"{chart.api_https}/acme/directory", str(chart.dir / "root-ca.pem"),
                               create_eab(chart.url), responder.tokens, name, user_agent="ikepki-chart-smoke")


def _openssl_ocsp(chart: Chart, leaf: Path, url: str, tmp: Path) -> str:
    chain = tmp / "chain.pem"
    chain.write_bytes((chart.dir / "root-ca.pem").read_bytes() + (chart.dir / "ca" / "ec.pem").read_bytes())
    proc = subprocess.run([require_binary("openssl"), "ocsp", "-issuer", str(chart.dir / "ca" / "ec.pem"),
                           "-cert", str(leaf), "-url", url, "-CAfile", str(chain), "-nonce"],
                          capture_output=True, text=True, timeout=60, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Response verify OK" in text, text
    return text


def test_chart_wiring_acme_enrollment_and_ocsp(chart: Chart, tmp_path: Path) -> None:
    leaf = _acme_enroll(chart, "chart-smoke.test")
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_url = next(d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP)
    assert ocsp_url == f"{chart.ocsp_url}/ocsp"  # IKEPKI_OCSP_BASE_URL reached the issuer
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    assert f"{leaf_path}: good" in _openssl_ocsp(chart, leaf_path, ocsp_url, tmp_path)
    token = (chart.dir / "admin-token").read_text().strip()
    with httpx.Client(verify=str(chart.dir / "root-ca.pem"), timeout=30) as c:
        r = c.post(f"{chart.api_https}/admin/v1/revocations", headers={"Authorization": f"Bearer {token}"},
                   json={"serials": [format(leaf.serial_number, "x")], "reason": "keyCompromise"})
    assert r.status_code == 200 and r.json()["revoked"], r.text
    wait_for(lambda: f"{leaf_path}: revoked" in _openssl_ocsp(chart, leaf_path, ocsp_url, tmp_path),
             "the ocsp process to report the revocation", timeout=60, interval=0.5)
    wait_for(lambda: leaf.serial_number in {e.serial_number for e in x509.load_der_x509_crl(
        httpx.get(f"{chart.ocsp_url}/crl/ec.crl", timeout=30).content)}, "the CRL to list it", timeout=60)
    for proc in chart.procs.values():  # every process still running after the flow
        _alive(proc)
