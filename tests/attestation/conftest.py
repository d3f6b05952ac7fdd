"""Real swtpm instances with private swtpm_localca manufacturer CAs, and a test attestation CA.

Recipe: /work/shared/notes/hsm-and-tpm.md ("swtpm with a private manufacturer CA").  Each session
starts two TPMs in temporary directories on free loopback ports: ``swtpm_device`` (its manufacturer
CA is trusted) and ``foreign_swtpm`` (another manufacturer CA, untrusted).  Both are killed and their
directories removed at the end of the session.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.audit import AuditLog
from ca.authority import Authority
from ca.clock import SystemClock as CoreClock
from ca.issuer import Issuer, IssuerUrls
from ca.keys.signer import SigningKey
from ca.model import Requester
from ca.profiles import BUILTIN_PROFILES
from ca.store import migrate
from ca.store.db import Database
from ca.store.sql import SqlCertificateStore
from enrollment.attestation.ak_cert import issue_ak_certificate
from enrollment.attestation.clock import Clock, SystemClock
from enrollment.attestation.credential import ActivatedAk, CredentialActivation, CredentialChallenge
from enrollment.attestation.device import TpmDevice
from enrollment.attestation.ek import EkTrustStore
from enrollment.attestation.repository import InMemoryChallengeRepository

SWTPM_SETUP_CONF = """create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = {cfg}/swtpm-localca.conf
create_certs_tool_options = {cfg}/swtpm-localca.options
active_pcr_banks = sha256
"""
LOCALCA_CONF = """statedir = {ca}
signingkey = {ca}/signkey.pem
issuercert = {ca}/issuercert.pem
certserial = {ca}/certserial
"""
LOCALCA_OPTIONS = "--platform-manufacturer Example\n--platform-version 2.1\n--platform-model TestVM\n"


@dataclass(frozen=True)
class Swtpm:
    """A running swtpm: its TCTI string and the directory holding its manufacturer root + issuer."""

    tcti: str
    ek_roots: Path
    state: Path


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"swtpm exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("swtpm did not start listening")


def _setup_state(base: Path) -> Path:
    cfg, ca, state = base / "cfg", base / "localca", base / "state"
    for directory in (cfg, ca, state):
        directory.mkdir()
    (cfg / "swtpm-localca.conf").write_text(LOCALCA_CONF.format(ca=ca))
    (cfg / "swtpm-localca.options").write_text(LOCALCA_OPTIONS)
    (cfg / "swtpm_setup.conf").write_text(SWTPM_SETUP_CONF.format(cfg=cfg))
    subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert", "--create-platform-cert",
         "--lock-nvram", "--config", str(cfg / "swtpm_setup.conf"), "--overwrite",
         "--logfile", str(base / "setup.log")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    roots = base / "ek-roots"
    roots.mkdir()
    shutil.copy(ca / "swtpm-localca-rootca-cert.pem", roots / "root.pem")
    shutil.copy(ca / "issuercert.pem", roots / "issuer.pem")
    return state


@contextlib.contextmanager
def running_swtpm() -> Iterator[Swtpm]:
    """Provision and run one swtpm; always kill it and remove its directory."""
    base = Path(tempfile.mkdtemp(prefix="ikepki-swtpm-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        state = _setup_state(base)
        port = _free_port_pair()
        proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_listening(port, proc)
        yield Swtpm(f"swtpm:host=127.0.0.1,port={port}", base / "ek-roots", state)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def swtpm_device() -> Iterator[Swtpm]:
    """The device under test (its manufacturer CA is trusted)."""
    with running_swtpm() as tpm:
        yield tpm


@pytest.fixture(scope="session")
def foreign_swtpm() -> Iterator[Swtpm]:
    """A TPM from an untrusted manufacturer CA."""
    with running_swtpm() as tpm:
        yield tpm


@pytest.fixture(scope="session")
def ek_trust(swtpm_device: Swtpm) -> EkTrustStore:
    """Trust store loaded from the device's manufacturer root directory."""
    return EkTrustStore.from_directory(swtpm_device.ek_roots)


@dataclass(frozen=True)
class SoftwareCa:
    """A software CA (stands in for the HSM attestation CA)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def authority(self) -> Authority:
        """A real Authority with this CA as issuer ``attestation`` over a migrated SQLite store in a temp dir
        (one per CA), so AK certificates in these tests are issued, linted and recorded like in production."""
        found = _AUTHORITIES.get(id(self))
        if found is None:
            directory = Path(tempfile.mkdtemp(prefix="ikepki-att-ca-"))
            url = f"sqlite:///{directory / 'ikepki.db'}"
            migrate.upgrade(url)
            issuer = Issuer("attestation", self.cert, SigningKey("software:test-attestation-ca", self.key), (),
                            self.cert, IssuerUrls.for_issuer("http://127.0.0.1:8080", "attestation"))
            found = _AUTHORITIES[id(self)] = (self, Authority({"attestation": issuer},
                                                              SqlCertificateStore(Database(url)),
                                                              dict(BUILTIN_PROFILES), AuditLog(None), CoreClock()))
        return found[1]

    def sign_ak(self, activated: ActivatedAk) -> x509.Certificate:
        """An AK certificate from this CA, through :func:`enrollment.attestation.ak_cert.issue_ak_certificate`."""
        return issue_ak_certificate(self.authority(), activated, Requester("test", "pytest")).certificate


_AUTHORITIES: dict[int, tuple[SoftwareCa, Authority]] = {}


def make_ca(name: str, now: datetime | None = None) -> SoftwareCa:
    """A self-signed P-384 CA certificate made with cryptography."""
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return SoftwareCa(key, cert)


@pytest.fixture(scope="session")
def attestation_ca() -> SoftwareCa:
    """The trusted attestation CA."""
    return make_ca("ikepki test attestation CA")


@pytest.fixture()
def clock() -> Clock:
    """Real aware-UTC time."""
    return SystemClock()


@pytest.fixture()
def activation(ek_trust: EkTrustStore, clock: Clock) -> CredentialActivation:
    """A credential-activation service with a fresh in-memory repository."""
    return CredentialActivation(ek_trust, InMemoryChallengeRepository[CredentialChallenge](), clock)


def enroll_ak(device: TpmDevice, activation: CredentialActivation, ca: SoftwareCa) -> x509.Certificate:
    """EK cert + AK public → MakeCredential → ActivateCredential → AK certificate."""
    blob = activation.start(device.ek_certificate(), device.ak_public())
    secret = device.activate_credential(blob.id_object, blob.encrypted_secret)
    activated = activation.finish(blob.challenge_id, secret)
    return ca.sign_ak(activated)


@pytest.fixture()
def enroll(activation: CredentialActivation, attestation_ca: SoftwareCa) -> Callable[[TpmDevice], x509.Certificate]:
    """Enroll a device's AK with the trusted attestation CA."""
    return lambda device: enroll_ak(device, activation, attestation_ca)


@pytest.fixture(scope="session")
def ca_factory() -> Callable[[str], SoftwareCa]:
    """Make further software CAs (e.g. an untrusted attestation CA)."""
    return make_ca
