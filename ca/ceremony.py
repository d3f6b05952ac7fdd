"""``ikepki init``: the key ceremony. Reads a declarative ceremony file (hierarchy, key types,
lifetimes, names), creates the keys on the token and the CA certificates, and writes a
self-contained deployment directory:

    DIR/softhsm2.conf, DIR/tokens/     SoftHSM token (default backend)
    DIR/hsm-pin, DIR/hsm-so-pin        PINs (mode 0600), referenced, never logged
    DIR/root-ca.pem                    the root certificate to distribute
    DIR/ca/<id>.pem                    issuing CA certificates
    DIR/services/<name>.pem            service certificates (push signer, SCEP RA, OCSP signers)
    DIR/tls/server.pem|.key            HTTPS listener certificate and key
    DIR/ikepki.db                      SQLite store (WAL)
    DIR/admin-token                    admin API credential (role admin)
    DIR/deployment.yaml                what was made: issuers, key URIs, files
    DIR/ikepki.yaml                    settings (created if missing)
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, ValidationError

from ca.authority import random_serial
from ca.errors import ErrorKind, PKIError
from ca.keys.pin import Pin
from ca.keys.signer import KeySpec, SigningKey
from ca.keys.software import generate_software_key

DEFAULT_CEREMONY = Path(__file__).resolve().parent / "default_ceremony.yaml"  # = hsm-config/ceremony.yaml


class _KeyedName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str
    key: str
    lifetime_days: int = 1825


class _ServiceKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    profile: str
    issuer: str
    subject: str


class _TlsServer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = "CN=localhost"
    sans: list[str] = ["DNS:localhost", "IP:127.0.0.1"]


class _Token(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = "ikepki"
    module: str | None = None  # an existing token on a real HSM; default: SoftHSM under DIR
    pin_source: str | None = None  # for an existing token: file:PATH or env:NAME


class Ceremony(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: _Token = _Token()
    root: _KeyedName
    issuers: dict[str, _KeyedName]
    service_keys: dict[str, _ServiceKey] = {}
    tls_server: _TlsServer = _TlsServer()
    key_backend: Literal["pkcs11", "software"] = "pkcs11"  # software: benchmarks/dev only

    @classmethod
    def load(cls, path: Path) -> Ceremony:
        try:
            data = yaml.safe_load(path.read_text())
            ceremony = cls.model_validate(data)
        except OSError as exc:
            raise PKIError(ErrorKind.CONFIG, f"cannot read ceremony file {path}: {exc.strerror}") from None
        except (yaml.YAMLError, ValidationError) as exc:
            raise PKIError(ErrorKind.CONFIG, f"invalid ceremony file {path}: {exc}".splitlines()[0]) from None
        for spec in [ceremony.root.key, *(i.key for i in ceremony.issuers.values()),
                     *(s.key for s in ceremony.service_keys.values())]:
            try:
                KeySpec.parse(spec)
            except ValueError as exc:
                raise PKIError(ErrorKind.CONFIG, f"ceremony file {path}: {exc}") from None
        for name, svc in ceremony.service_keys.items():
            if svc.issuer not in ceremony.issuers:
                raise PKIError(ErrorKind.CONFIG, f"service key {name}: unknown issuer {svc.issuer!r}")
        return ceremony


@dataclass
class InitResult:
    dir: Path
    made: list[tuple[str, str]] = field(default_factory=list)  # (what, where)
    existing: bool = False  # a complete deployment was already there (init --if-missing): nothing made


def write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def _name(rfc4514: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(rfc4514)
    except ValueError as exc:
        raise PKIError(ErrorKind.CONFIG, f"bad subject {rfc4514!r}: {exc}") from None


# Present from the first thing an `ikepki init` makes until its last step (the admin credential and
# the audit line): a deployment.yaml next to it belongs to a ceremony that did not finish.
INIT_INCOMPLETE = "init-incomplete"


def has_ca(directory: Path) -> bool:
    return (directory / "root-ca.pem").exists() or (directory / "deployment.yaml").exists()


def wipe(directory: Path) -> None:
    for name in ("tokens", "ca", "services", "tls", "keys"):
        shutil.rmtree(directory / name, ignore_errors=True)
    for name in ("ikepki.db", "ikepki.db-wal", "ikepki.db-shm", "root-ca.pem", "deployment.yaml", "audit.log",
                 "admin-token", "hsm-pin", "hsm-so-pin", "softhsm2.conf", INIT_INCOMPLETE):
        (directory / name).unlink(missing_ok=True)


def init_softhsm_token(directory: Path, label: str, pin_file: Path | None = None,
                       so_pin_file: Path | None = None) -> tuple[Path, Pin]:
    """Create a private SoftHSM config and token under ``directory`` (absolute paths).

    PINs come from ``pin_file``/``so_pin_file`` when they exist (e.g. a Kubernetes Secret),
    otherwise fresh random PINs are written to DIR/hsm-pin and DIR/hsm-so-pin (mode 0600)."""
    directory = directory.resolve()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    if pin_file is not None and pin_file.exists():
        pin = pin_file.read_text().strip()
    else:
        pin = secrets.token_hex(16)
        write_secret(directory / "hsm-pin", pin)
    if so_pin_file is not None and so_pin_file.exists():
        so_pin = so_pin_file.read_text().strip()
    else:
        so_pin = secrets.token_hex(16)
        write_secret(directory / "hsm-so-pin", so_pin)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    util = shutil.which("softhsm2-util")
    if util is None:
        raise PKIError(ErrorKind.CONFIG, "softhsm2-util not found: install the softhsm2 package (make setup)")
    proc = subprocess.run([util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PKIError(ErrorKind.UNAVAILABLE, f"softhsm2-util --init-token failed: {proc.stderr.strip()}")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return conf, Pin(pin)


class KeyMaker:
    """Creates ceremony keys on the token (or as software keys for benchmarks)."""

    def __init__(self, backend: str, token: Any, directory: Path) -> None:
        self.backend, self.token, self.directory = backend, token, directory

    def make(self, label: str, spec_text: str) -> tuple[SigningKey, str]:
        spec = KeySpec.parse(spec_text)
        if self.backend == "software":
            sk = generate_software_key(spec, label)
            path = self.directory / "keys" / f"{label}.key"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_secret(path, sk.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()).decode())
            return sk, f"software:{path.relative_to(self.directory)}"
        if self.token.has_key(label):
            self.token.destroy(label)
        self.token.generate(spec, label)
        sk = self.token.signing_key(label, rsa_pss=spec.rsa_pss)
        return sk, str(self.token.uri(label))


def build_ca_certificate(subject: x509.Name, key: SigningKey, issuer_name: x509.Name, issuer_key: SigningKey,
                         now: datetime, days: int, path_length: int | None, crl_url: str | None,
                         ca_issuers_url: str | None, not_after_limit: datetime | None = None,
                         ocsp_url: str | None = None) -> x509.Certificate:
    """A CA certificate (RFC 5280 §4.2.1.9 basicConstraints cA=true, keyCertSign|cRLSign)."""
    not_after = now + timedelta(days=days)
    if not_after_limit is not None:
        not_after = min(not_after, not_after_limit)
    pub = key.key.public_key()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(pub)
               .serial_number(random_serial()).not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.key.public_key()), critical=False))  # type: ignore[arg-type]
    if crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    access = []
    if ocsp_url:  # the root key answers OCSP for the issuing CAs (strict relying parties need a URL)
        access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                             x509.UniformResourceIdentifier(ocsp_url)))
    if ca_issuers_url:
        access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                             x509.UniformResourceIdentifier(ca_issuers_url)))
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder.sign(issuer_key.key, issuer_key.hash_algorithm, rsa_padding=issuer_key.rsa_padding())


def make_tls_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    write_secret(directory / "tls" / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    return key
