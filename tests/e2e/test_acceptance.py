"""End-to-end acceptance (bundled IKEv2 responder issue): devices enroll with independent
clients — lego over ACME http-01, strongSwan `pki --est` over EST, strongSwan `pki --scep` over
SCEP — then connect with strongSwan charon to ikepki's bundled responder, which checks their
chains and OCSP (strict, against `ikepki serve`) and applies a policy. `ikepki revoke --yes`
on one device is pushed (signed JWS) to the responder: its SA is deleted and its reconnect is
refused with AUTHENTICATION_FAILED while the others stay up. Expired, wrong-EKU, foreign-CA
certificates and a legacy-only proposal are refused with the right notify.

Everything runs inside one network namespace made by the test (charon uses kernel-libipsec
there so CHILD_SAs really install; strongswan note §2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gw_procs import Charon, Conn, NetnsLab, netns_lab, start_bundled_responder, start_ikepki

from ca.profiles import BUILTIN_PROFILES, EKU_IPSEC_IKE
from tests.conftest import free_port, init_deployment_dir, require_binary, run_ikepki
from tests.swan_harness import wait_until

pytestmark = pytest.mark.interop
PKI_CONF = ("pki { load = random nonce aes sha1 sha2 md5 pem pkcs1 pkcs7 pkcs8 pkcs12 pgp dnskey sshkey x509 pubkey "
            "revocation constraints gmp openssl curl }\n")


class Lab(NetnsLab):
    """The acceptance lab (:class:`gw_procs.NetnsLab`) with strongSwan's ``pki`` tool and curl inside it."""

    def pki(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(require_binary("pki"), *args, env={"STRONGSWAN_CONF": str(self.work / "pki.conf")},
                        check=check)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.fail("needs root and /dev/net/tun (network namespace + kernel-libipsec)")
    with netns_lab(Lab, tmp_path_factory.mktemp("e2e"), "ikepki-e2e") as lab:
        (lab.work / "pki.conf").write_text(PKI_CONF)
        init_deployment_dir(lab.dir)
        start_ikepki(lab, {"IKEPKI_ACME_HTTP01_PORT": str(lab.http01_port),
                           "IKEPKI_ACME_VALIDATION_HOSTS": "*.test=127.0.0.1"})
        machine_oid = BUILTIN_PROFILES["machine"].policy_oid.dotted_string
        start_bundled_responder(lab, f"rules:\n  - name: machines\n    match:\n      profile: {machine_oid}\n"
                                     "      san: ['DNS:*.example.test']\n"
                                     "    local_ts: ['10.231.1.0/24']\n    remote_ts: ['10.231.2.0/24']\n")
        yield lab


# --- enrollment with independent clients --------------------------------------------------------

def _enroll_acme_lego(lab: Lab, name: str) -> tuple[bytes, bytes]:
    eab = json.loads(run_ikepki("acme", "eab", "create", "--profile", "machine", "--identifiers", "*.example.test",
                                "--json", directory=lab.dir).stdout)
    path = lab.work / "lego"
    lab.run(require_binary("lego"), "--server", f"https://127.0.0.1:{lab.https_port}/acme/directory", "--email",
            "ops@example.test", "--accept-tos", "--key-type", "ec256", "--domains", name, "--eab", "--kid", eab["kid"],
            "--hmac", eab["hmac_key"], "--http", "--http.port", f"127.0.0.1:{lab.http01_port}", "--path", str(path),
            "run", env={"LEGO_CA_CERTIFICATES": str(lab.dir / "root-ca.pem")})
    return (path / "certificates" / f"{name}.crt").read_bytes(), (path / "certificates" / f"{name}.key").read_bytes()


def _enroll_est_pki(lab: Lab, name: str) -> tuple[bytes, bytes]:
    secret = json.loads(run_ikepki("est", "register", "--device", name, "--profile", "machine", "--san",
                                   f"DNS:{name}", "--json", directory=lab.dir).stdout)["secret"]
    key = lab.pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem").stdout
    (lab.work / f"{name}.key").write_text(key)
    req = lab.pki("--req", "--in", f"{name}.key", "--type", "priv", "--dn", f"CN={name}", "--san", name,
                  "--outform", "pem").stdout
    (lab.work / f"{name}.csr").write_text(req)
    cert = lab.pki("--est", "--url", f"https://127.0.0.1:{lab.https_port}", "--cacert", str(lab.dir / "root-ca.pem"),
                   "--cacert", str(lab.dir / "ca" / "ec.pem"), "--in", f"{name}.csr", "--userpass", f"{name}:{secret}",
                   "--outform", "pem").stdout
    return cert.encode(), key.encode()


def _enroll_scep_pki(lab: Lab, name: str) -> tuple[bytes, bytes]:
    url = f"http://127.0.0.1:{lab.http_port}/scep"
    lab.pki("--scepca", "--url", url, "--caout", "scep-ca.crt", "--raout", "scep-ra.crt", "--outform", "pem")
    otp = json.loads(run_ikepki("scep", "challenge", "create", "--profile", "machine", "--json",
                                directory=lab.dir).stdout)["challenge"]
    key = lab.pki("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem").stdout
    (lab.work / f"{name}.key").write_text(key)
    cas = [a for p in sorted(lab.work.glob("scep-ca*.crt")) for a in ("--cacert", p.name)]
    cert = lab.pki("--scep", "--url", url, "--in", f"{name}.key", "--dn", f"CN={name}", "--san", name, "--password",
                   otp, "--cacert-enc", "scep-ra.crt", "--cacert-sig", "scep-ra.crt", *cas, "--outform", "pem").stdout
    return cert.encode(), key.encode()


# --- certificates that must be refused ----------------------------------------------------------

_ISSUE_AT = r"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ca.clock import FixedClock
from ca.csr import parse_csr
from ca.deployment import Deployment
from ca.model import IssuanceRequest, Requester
directory, profile, csr_path, out = Path(sys.argv[1]), sys.argv[2], sys.argv[4], sys.argv[5]
hours_ago = float(sys.argv[3])
dep = Deployment.open(directory, clock=FixedClock(datetime.now(UTC) - timedelta(hours=hours_ago)))
csr = parse_csr(Path(csr_path).read_bytes())
if profile == "tls-server":
    issued = dep.authority.issue_internal("tls-server", csr.public_key, csr.subject, csr.sans)
else:
    issued = dep.authority.issue(IssuanceRequest(csr, profile, Requester("test", "e2e"), timedelta(hours=1)))
Path(out).write_bytes(issued.pem_chain())
"""


def _ec_key_and_csr(lab: Lab, name: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    (lab.work / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    path = lab.work / f"{name}.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def _issue_at(lab: Lab, name: str, profile: str, hours_ago: float) -> tuple[bytes, bytes]:
    csr = _ec_key_and_csr(lab, name)
    out = lab.work / f"{name}.pem"
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    subprocess.run([sys.executable, "-c", _ISSUE_AT, str(lab.dir), profile, str(hours_ago), str(csr), str(out)],
                   check=True, env=env, capture_output=True)
    return out.read_bytes(), (lab.work / f"{name}.key").read_bytes()


def _foreign(lab: Lab, name: str) -> tuple[bytes, bytes]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Foreign Root")])
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([EKU_IPSEC_IKE, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (leaf.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


# --- the test -----------------------------------------------------------------------------------

def _serial(pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")


def test_enroll_connect_revoke_and_refuse(lab: Lab) -> None:
    devices = {"acme": ("dev-acme.example.test", _enroll_acme_lego(lab, "dev-acme.example.test")),
               "est": ("dev-est.example.test", _enroll_est_pki(lab, "dev-est.example.test")),
               "scep": ("dev-scep.example.test", _enroll_scep_pki(lab, "dev-scep.example.test"))}
    for _name, (cert, _key) in devices.values():
        x509.load_pem_x509_certificate(cert)  # each client really got a certificate
    bad = {"expired": _issue_at(lab, "expired.example.test", "machine", hours_ago=3),
           "wrong-eku": _issue_at(lab, "wrong-eku.example.test", "tls-server", hours_ago=0),
           "foreign": _foreign(lab, "foreign.example.test")}
    conns = [Conn(kind, kind, name) for kind, (name, _) in devices.items()]
    conns += [Conn(kind, kind, f"{kind}.example.test", children=False) for kind in bad]
    conns.append(Conn("legacy", "acme", "dev-acme.example.test", proposals="aes256-sha1-modp1024", children=False))
    certs = {kind: pair for kind, (_, pair) in devices.items()} | bad
    charon = Charon(lab.work / "charon", free_port(), free_port(), wrap=lab.wrap,
                    kernel_plugins="kernel-libipsec kernel-netlink")
    charon.state.mkdir()
    cacerts = {p: (lab.dir / f).read_bytes() for p, f in (("root", "root-ca.pem"), ("ec", "ca/ec.pem"),
                                                          ("rsa", "ca/rsa.pem"))}
    charon.write_config(conns, lab.ike_port, certs, cacerts)
    charon.start()
    lab.charon = charon

    # 1. each enrolled device connects: IKE SA + CHILD_SA, reported by both sides
    for kind in devices:
        ok, log = charon.initiate(kind, "net")
        assert ok, f"{kind}: {log}\n{charon.log()[-3000:]}"
    up = {sa["peer_id"] for sa in lab.responder_sas() if sa.get("state") in (None, "ESTABLISHED", "established")}
    assert {name for name, _ in devices.values()} <= {p.split(":", 1)[-1] for p in up} | up, lab.responder_sas()
    for kind in devices:
        assert charon.sas_of(kind), f"charon reports no SA for {kind}"
    children = [e for e in lab.events() if e["event"] == "child_sa_up"]
    assert len({e.get("peer_id") for e in children}) >= 3, children

    # 2. revoke the EST device: pushed, its SA deleted, reconnect refused; the others stay up
    _, (victim_cert, _) = devices["est"]
    serial = _serial(victim_cert)
    t0 = time.monotonic()
    run_ikepki("revoke", serial, "--reason", "keyCompromise", "--yes", directory=lab.dir)
    gone = wait_until(lambda: all(sa.get("serial") != serial for sa in lab.responder_sas()), 10)
    elapsed = time.monotonic() - t0
    print(f"\nrevoke -> responder SA deleted: {elapsed * 1000:.0f} ms (includes the CLI start-up)")
    assert gone, lab.responder_sas()
    assert wait_until(lambda: not charon.sas_of("est"), 10), "charon still has the revoked SA"
    ok, log = charon.initiate("est", timeout_ms=8000)
    assert not ok and "AUTHENTICATION_FAILED" in log + charon.log()[-4000:], log
    assert any(e["event"] == "auth_failed" and e.get("serial") == serial for e in lab.events())
    for kind in ("acme", "scep"):
        assert charon.sas_of(kind), f"{kind} lost its SA"

    # 3. expired, wrong EKU, foreign CA: AUTHENTICATION_FAILED; legacy proposal: NO_PROPOSAL_CHOSEN
    for kind in bad:
        ok, log = charon.initiate(kind, timeout_ms=8000)
        assert not ok, f"{kind} was accepted"
        assert "AUTHENTICATION_FAILED" in log + charon.log()[-6000:], f"{kind}: {log}"
    reasons = [e.get("reason", "") for e in lab.events() if e["event"] == "auth_failed"]
    assert len(reasons) >= 4, reasons
    ok, log = charon.initiate("legacy", timeout_ms=8000)
    assert not ok and "NO_PROPOSAL_CHOSEN" in log + charon.log()[-6000:], log
    assert any(e["event"] == "proposal_refused" for e in lab.events())
