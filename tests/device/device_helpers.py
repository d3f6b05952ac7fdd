"""Helpers for the device tests: swtpm (the attestation tests' recipe), an ikepki server with the TPM
manufacturer roots configured, and a Python-level device flow for negative tests."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE, TPMT_PUBLIC, TPMT_SENSITIVE, TPMT_SIG_SCHEME

from ca.model import CertificateQuery
from ca.store.db import Database
from ca.store.sql import SqlCertificateStore
from enrollment.acme.store import AcmeStore
from enrollment.attestation.cli import (
    HARDWARE_MODULE,
    PERMANENT_IDENTIFIER,
    AcmeSession,
    AgentTpm,
    AttestClient,
    Eab,
    device_identifiers,
    enroll_ak,
)
from enrollment.attestation.device import Certification, _cose_alg, _signature_bytes, build_att_obj


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_TESTS = Path(__file__).resolve().parent.parent
root_conftest = sys.modules.get("ikepki_root_conftest") or _load("ikepki_root_conftest", _TESTS / "conftest.py")
swtpm_recipe = sys.modules.get("ikepki_swtpm_recipe") or _load("ikepki_swtpm_recipe", _TESTS / "attestation" /
                                                                  "conftest.py")
running_swtpm = swtpm_recipe.running_swtpm
Swtpm = swtpm_recipe.Swtpm
start_server = root_conftest.start_server
run_ikepki = root_conftest.run_ikepki
NS = "urn:ietf:params:acme:error:"


@dataclass
class DevicePki:
    """An ``ikepki serve`` whose attestation.ek_roots trusts the given TPM manufacturers."""

    server: Any  # tests.conftest.Server

    @property
    def dir(self) -> Path:
        return Path(self.server.dir)

    @property
    def directory(self) -> str:
        return f"{self.server.https_url}/acme/directory"

    @property
    def attest(self) -> str:
        return f"{self.server.https_url}/attest"

    @property
    def root_pem(self) -> str:
        return str(self.server.root_pem)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.root_pem)

    def eab(self, identifiers: str = "device:*", profile: str = "machine") -> Eab:
        """An EAB key written straight into the store (``ikepki acme eab create`` is covered by the ACME tests
        and costs seconds of CLI start-up per call)."""
        kid, key = "eab-" + secrets.token_urlsafe(12), secrets.token_bytes(32)
        AcmeStore(self.db()).add_eab_key(kid, key, profile, identifiers.split(","), None, False,
                                         datetime.now(UTC))
        return Eab(kid, base64.urlsafe_b64encode(key).decode().rstrip("="))

    def db(self) -> Database:
        return Database(f"sqlite:///{self.dir / 'ikepki.db'}")

    def store(self) -> SqlCertificateStore:
        return SqlCertificateStore(self.db())

    def issued(self, ek_fingerprint: str, profile: str = "machine") -> list[Any]:
        return self.store().search(CertificateQuery(ek_fingerprint=ek_fingerprint, profile=profile, limit=1000))

    def block(self, ek_fingerprint: str) -> None:
        with httpx.Client(verify=self.tls(), timeout=30) as http:
            resp = http.post(f"{self.server.https_url}/admin/v1/devices/ek:{ek_fingerprint}/block",
                             json={"reason": "test"}, headers={"Authorization": f"Bearer {self.server.admin_token()}"})
        assert resp.status_code == 200, resp.text


def trust_dir(base: Path, *tpms: Any) -> Path:
    """One EK roots directory holding every given TPM manufacturer's root and issuer."""
    base.mkdir(parents=True, exist_ok=True)
    for i, tpm in enumerate(tpms):
        for pem in Path(tpm.ek_roots).iterdir():
            (base / f"{i}-{pem.name}").write_bytes(pem.read_bytes())
    return base


def device_cli(pki: DevicePki, *args: str, eab: Eab | None = None, tmp: Path | None = None,
               check: bool = False) -> subprocess.CompletedProcess[str]:
    """``ikepki device …`` as a subprocess (no --dir: the agent runs on the device)."""
    extra: list[str] = []
    if eab is not None:
        assert tmp is not None
        key_file = tmp / f"eab-{eab.kid}.key"
        key_file.write_text(eab.hmac_key)
        os.chmod(key_file, 0o600)
        extra = ["--eab-kid", eab.kid, "--eab-hmac-key", str(key_file)]
    return run_ikepki("device", *args, *extra, check=check, timeout=120)


def ek_fingerprint_of(tpm: Any) -> str:
    with AgentTpm(tpm.tcti) as dev:
        permanent, _ = device_identifiers(dev.ek_certificate())
    return permanent.value


def certify_software_key(dev: AgentTpm, key: ec.EllipticCurvePrivateKey, key_authorization: str,
                         chain: list[bytes]) -> bytes:
    """A genuine AK certifies a software key loaded with TPM2_LoadExternal (so it is not fixedTPM)."""
    from enrollment.attestation.tpm_statement import expected_extra_data

    ectx = dev._ectx
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = TPMT_PUBLIC.from_pem(pem, objectAttributes=TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.USERWITHAUTH)
    handle = ectx.load_external(TPM2B_PUBLIC(public), TPM2B_SENSITIVE(TPMT_SENSITIVE.from_pem(pem)), ESYS_TR.RH_NULL)
    try:
        ak = ectx.tr_from_tpmpublic(dev._ak_handle)
        ak_public, _, _ = ectx.read_public(ak)
        alg = _cose_alg(ak_public.publicArea)
        attest, signature = ectx.certify(handle, ak, expected_extra_data(key_authorization, alg),
                                         TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), session1=ESYS_TR.PASSWORD,
                                         session2=ESYS_TR.PASSWORD)
        key_public, _, _ = ectx.read_public(handle)
    finally:
        ectx.flush_context(handle)
    certification = Certification(alg, bytes(attest.attestationData), _signature_bytes(signature),
                                  bytes(key_public.publicArea.marshal()))
    return build_att_obj(certification, chain)


def software_csr(identifiers: list[Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([i.to_other_name() for i in identifiers]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass
class DeviceFlow:
    """One device (TPM) with an ACME account and an AK certificate, driven step by step."""

    pki: DevicePki
    tpm: AgentTpm
    http: httpx.Client
    session: AcmeSession
    eab: Eab
    chain: list[bytes] = field(default_factory=list)

    @property
    def attest_client(self) -> AttestClient:
        return AttestClient(self.http, self.pki.attest)

    def identifiers(self) -> tuple[Any, Any]:
        return device_identifiers(self.tpm.ek_certificate())

    def enroll_ak(self) -> list[bytes]:
        self.chain = enroll_ak(self.tpm, self.attest_client, self.eab)
        return self.chain

    def order(self, identifiers: tuple[Any, ...] | None = None, csr_pem: bytes | None = None) -> Any:
        ids = identifiers or self.identifiers()
        self.tpm.ensure_device_key(0x81000003)
        if csr_pem is None:
            csr_pem = self.tpm.build_csr(list(ids)).public_bytes(serialization.Encoding.PEM)
        typed = [(PERMANENT_IDENTIFIER if i.__class__.__name__ == "PermanentIdentifier" else HARDWARE_MODULE,
                  i.acme_value()) for i in ids]
        return self.session.new_order(typed, csr_pem)

    def answer(self, order: Any, att_obj_for: Callable[[str], bytes] | None = None) -> None:
        self.session.answer_device_attest(order, att_obj_for or (lambda ka: self.tpm.att_obj(ka, self.chain)))

    def key_authorizations(self, order: Any) -> list[str]:
        from enrollment.attestation.acme_challenge import DeviceAttest01

        return [self.session.key_authorization(next(c for c in a.body.challenges if isinstance(c.chall,
                                                                                                DeviceAttest01)))
                for a in order.authorizations]


@contextmanager
def device_flow(pki: DevicePki, tpm: Any, *, enroll: bool = True, eab: Eab | None = None) -> Iterator[DeviceFlow]:
    eab = eab or pki.eab()
    account_key = ec.generate_private_key(ec.SECP256R1())
    with httpx.Client(verify=pki.tls(), timeout=30) as http, AgentTpm(tpm.tcti) as dev, \
            AcmeSession(pki.directory, account_key, pki.root_pem) as session:
        session.register(eab)
        flow = DeviceFlow(pki, dev, http, session, eab)
        if enroll:
            flow.enroll_ak()
        yield flow
