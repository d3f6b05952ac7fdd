"""The image built by `make image`, run with podman the way the chart runs it: its own user
(uid 10001), a read-only root filesystem, /tmp a tmpfs, every capability dropped, the state in
a volume. `ikepki init` runs in one container, `ikepki serve` in another; from the host, lego
enrolls over ACME and curl + openssl over EST, `openssl ocsp` sees `good` and then `revoked`
after `ikepki revoke --yes` inside the container; a new container on the same volume serves
the same CA from the same SoftHSM token; SIGTERM stops it within the chart's grace period; the
image holds no build toolchain and no private key."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.conftest import free_port, require_binary
from tests.container.podman import (
    STATE,
    Ledger,
    bridge_gateway,
    host_port,
    inspect,
    ledger,
    logs,
    podman,
    wait_http,
)
from tests.ha.ha_helpers import wait_for
from tests.helm.render import find, pod_spec, render_manifests

# the first test's setup may include a cold image build (minutes): above the suite's 300 s
pytestmark = [pytest.mark.interop, pytest.mark.timeout(1500)]


@dataclass
class Served:
    led: Ledger
    image: str
    volume: str
    work: Path
    http01_port: int
    gateway: str
    name: str = ""
    https: str = ""
    http: str = ""
    generation: int = field(default=0)

    def start(self) -> None:
        """`ikepki serve` (the image's default command) in a new container on the state volume."""
        self.generation += 1
        acme = {"IKEPKI_ACME_HTTP01_PORT": str(self.http01_port),
                "IKEPKI_ACME_VALIDATION_HOSTS": f"*.test={self.gateway}", "IKEPKI_ACME_VALIDATION_TIMEOUT": "10"}
        options = ("-v", f"{self.volume}:{STATE}", "-p", "127.0.0.1::8443", "-p", "127.0.0.1::8080",
                   *[arg for k, v in acme.items() for arg in ("-e", f"{k}={v}")])
        self.name = self.led.run(f"serve{self.generation}", self.image, options=options)
        self.https = f"https://127.0.0.1:{host_port(self.name, '8443/tcp')}"
        self.http = f"http://127.0.0.1:{host_port(self.name, '8080/tcp')}"
        wait_http(self.name, f"{self.http}/readyz", timeout=180)

    def exec(self, *args: str, timeout: float = 180) -> str:
        return podman("exec", self.name, *args, timeout=timeout)

    def file(self, relative: str) -> bytes:
        return self.exec("cat", f"{STATE}/{relative}").encode()


@pytest.fixture(scope="module")
def served(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("container")
    with ledger() as led:
        volume = led.volume("state")
        # `ikepki init` in a container of its own, exactly as hardened as the server
        out = led.run("init", image, "init", options=("-v", f"{volume}:{STATE}"), detach=False)
        assert "Next: ikepki serve" in out, out
        # the ACME server reaches lego (on the host) at podman's bridge gateway
        srv = Served(led, image, volume, work, free_port(), bridge_gateway())
        srv.start()
        yield srv


def _write_root(srv: Served) -> Path:
    root = srv.work / "root-ca.pem"
    root.write_bytes(srv.file("root-ca.pem"))
    return root


def test_runs_as_uid_10001_on_a_read_only_root(served: Served) -> None:
    config = inspect(served.image)["Config"]
    assert config["User"] == "10001:10001"
    state = inspect(served.name)
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    status = served.exec("cat", "/proc/1/status")
    assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    denied = subprocess.run(["podman", "exec", served.name, "touch", "/opt/ikepki/x"], capture_output=True,
                            text=True, check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    mounts = served.exec("cat", "/proc/mounts")
    assert re.search(r"^tmpfs /tmp tmpfs rw", mounts, re.M), mounts
    assert re.search(rf"^\S+ {STATE} \S+ rw", mounts, re.M), mounts  # the volume
    served.exec("touch", "/tmp/ok", f"{STATE}/ok")
    # the CA key is on the SoftHSM token in the volume
    assert served.exec("ls", f"{STATE}/tokens").split(), "no SoftHSM token in the state volume"


def _lego(srv: Served, domain: str, kid: str, hmac: str) -> x509.Certificate:
    path = srv.work / f"lego-{domain}"
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(_write_root(srv))}
    proc = subprocess.run([require_binary("lego"), "--server", f"{srv.https}/acme/directory", "--email",
                           "lego@example.test", "--accept-tos", "--key-type", "ec256", "--domains", domain, "--eab",
                           "--kid", kid, "--hmac", hmac, "--path", str(path), "--http", "--http.port",
                           f"{srv.gateway}:{srv.http01_port}", "run"],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs(srv.name)[-3000:]
    return x509.load_pem_x509_certificate((path / "certificates" / f"{domain}.crt").read_bytes())


def _eab(srv: Served) -> tuple[str, str]:
    import json

    data = json.loads(srv.exec("ikepki", "acme", "eab", "create", "--profile", "machine", "--identifiers", "*.test",
                               "--json"))
    return str(data["kid"]), str(data["hmac_key"])


def _ocsp(srv: Served, leaf: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    leaf_path = srv.work / f"leaf-{leaf.serial_number:x}.pem"
    leaf_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    issuer = srv.work / "issuer.pem"
    issuer.write_bytes(srv.file("ca/ec.pem"))
    chain = srv.work / "chain.pem"
    chain.write_bytes(_write_root(srv).read_bytes() + issuer.read_bytes())
    proc = subprocess.run([require_binary("openssl"), "ocsp", "-issuer", str(issuer), "-cert", str(leaf_path),
                           "-url", f"{srv.http}/ocsp", "-CAfile", str(chain), "-nonce"],
                          capture_output=True, text=True, timeout=60, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Response verify OK" in text, text
    return text.replace(str(leaf_path), "LEAF")


def test_lego_acme_then_ocsp_good_then_revoked_by_the_cli_inside(served: Served) -> None:
    kid, hmac = _eab(served)
    leaf = _lego(served, "lego-in-container.test", kid, hmac)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["lego-in-container.test"]
    assert "LEAF: good" in _ocsp(served, leaf)
    out = served.exec("ikepki", "revoke", format(leaf.serial_number, "x"), "--reason", "keyCompromise", "--yes")
    assert "revoked 1 certificate" in out, out
    wait_for(lambda: "LEAF: revoked" in _ocsp(served, leaf), "OCSP to answer revoked", timeout=60, interval=0.5)


def test_est_with_curl_and_openssl(served: Served) -> None:
    require_binary("curl")
    token = served.file("admin-token").decode().strip()
    root = _write_root(served)
    with httpx.Client(verify=str(root), timeout=60) as c:
        r = c.post(f"{served.https}/admin/v1/est/registrations", headers={"Authorization": f"Bearer {token}"},
                   json={"devices": [{"device_id": "ctr-dev-1", "profile": "machine",
                                      "sans": ["DNS:ctr-dev-1.example.test"]}]})
    assert r.status_code == 201, r.text
    secret = r.json()["registrations"][0]["secret"]
    script = f"""
URL={served.https}/.well-known/est
openssl ecparam -name prime256v1 -genkey -noout -out dev.key
openssl req -new -key dev.key -subj "/O=Example/CN=ctr-dev-1" \\
    -addext "subjectAltName=DNS:ctr-dev-1.example.test" -outform DER | openssl base64 > csr.b64
curl -sS --fail-with-body --cacert {root} -o cacerts.b64 "$URL/cacerts"
openssl base64 -d -A -in cacerts.b64 | openssl pkcs7 -inform DER -print_certs -out cacerts.pem
curl -sS --fail-with-body --cacert {root} -u "ctr-dev-1:{secret}" -H "Content-Type: application/pkcs10" \\
    --data-binary @csr.b64 -o cert.b64 "$URL/simpleenroll"
openssl base64 -d -A -in cert.b64 | openssl pkcs7 -inform DER -print_certs -out dev.pem
openssl verify -CAfile {root} -untrusted cacerts.pem dev.pem
openssl x509 -in dev.pem -noout -ext subjectAltName
"""
    work = served.work / "est"
    work.mkdir()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dev.pem: OK" in proc.stdout and "DNS:ctr-dev-1.example.test" in proc.stdout, proc.stdout


def _grace_period() -> int:
    """terminationGracePeriodSeconds of the chart's api pod (Kubernetes' default when unset)."""
    api = find(render_manifests(), "Deployment", "pki-ikepki-api")[0]
    return int(pod_spec(api).get("terminationGracePeriodSeconds", 30))


def test_sigterm_stops_within_grace_and_restart_keeps_the_ca(served: Served) -> None:
    grace = _grace_period()
    root_before = served.file("root-ca.pem")
    issuer_before = x509.load_pem_x509_certificate(served.file("ca/ec.pem"))
    started = time.monotonic()
    podman("stop", "-t", str(grace), served.name, timeout=grace + 60)  # SIGTERM, SIGKILL after the grace
    took = time.monotonic() - started
    state = inspect(served.name)["State"]
    # exited on its own: not killed (137) when the grace period ran out
    assert state["ExitCode"] in (0, 143) and took < grace, (state["ExitCode"], took, logs(served.name)[-2000:])
    served.start()  # a new container, the same volume: the same SoftHSM token, the same CA
    ready = httpx.get(f"{served.http}/readyz", timeout=10)
    assert ready.status_code == 200 and "hsm: ok" in ready.text.lower(), ready.text
    assert served.file("root-ca.pem") == root_before
    assert httpx.get(f"{served.http}/ca/root.pem", timeout=10).content.strip() == root_before.strip()
    kid, hmac = _eab(served)
    leaf = _lego(served, "after-restart.test", kid, hmac)
    leaf.verify_directly_issued_by(issuer_before)  # signed by the key kept on the token
    assert "LEAF: good" in _ocsp(served, leaf)


PRIVATE_PEM = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64}")
TOOLCHAIN = ("gcc", "cc", "c++", "g++", "cpp", "make", "ld", "as", "pkg-config", "clang", "pip", "pip3")
BUILD_PACKAGES = ("build-essential", "gcc", "gcc-12", "g++", "cpp", "binutils", "make", "libc6-dev", "libtss2-dev",
                  "python3-dev", "python3.11-dev", "libpython3.11-dev", "libssl-dev", "libffi-dev", "pkg-config")


def test_image_has_no_toolchain_and_no_private_keys(image: str) -> None:
    root = Path(podman("image", "mount", image).strip())
    try:
        for directory in ("usr/bin", "usr/local/bin", "usr/sbin", "opt/ikepki/bin"):
            present = [tool for tool in TOOLCHAIN if (root / directory / tool).exists()]
            assert not present, f"build tools in /{directory}: {present}"
        installed = set(re.findall(r"^Package: (\S+)", (root / "var/lib/dpkg/status").read_text(), re.M))
        assert not installed & set(BUILD_PACKAGES), installed & set(BUILD_PACKAGES)
        assert "softhsm2" in installed  # the scan below looks at the real runtime tree
        keys, key_files = [], []
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            if path.suffix in (".key", ".p12", ".pfx") or path.name in ("hsm-pin", "hsm-so-pin", "admin-token"):
                key_files.append(str(path.relative_to(root)))
            data = path.read_bytes()
            # ELF objects skipped: libgnutls carries a GOST self-test key as PEM text
            if not data.startswith(b"\x7fELF") and PRIVATE_PEM.search(data):
                keys.append(str(path.relative_to(root)))
        assert not keys and not key_files, (keys, key_files)
        assert not any((root / "var/lib/softhsm/tokens").iterdir()), "a SoftHSM token baked into the image"
        assert not (root / STATE.lstrip("/")).exists() or not any((root / STATE.lstrip("/")).iterdir())
    finally:
        podman("image", "unmount", image, check=False)


def test_image_holds_the_current_sources(image: str) -> None:
    """The content-keyed cache never serves a stale image: every module of the four packages in
    the image is byte-identical to the working tree (buildah's layer cache once kept an old
    wheel: a bind mount from another stage is not part of its cache key)."""
    root = Path(podman("image", "mount", image).strip())
    try:
        site = next((root / "opt/ikepki/lib").glob("python3*/site-packages"))
        repo = Path(__file__).resolve().parents[2]
        for package in ("ca", "enrollment", "ocsp", "gateway"):
            sources = sorted(p.relative_to(repo) for p in (repo / package).rglob("*.py"))
            assert sources, package
            stale = [str(p) for p in sources
                     if not (site / p).is_file() or (site / p).read_bytes() != (repo / p).read_bytes()]
            assert not stale, stale[:10]
    finally:
        podman("image", "unmount", image, check=False)
