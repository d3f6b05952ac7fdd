"""``ikepki device …``: the device agent for TPM-bound machine identities.

``enroll``: (1) the AK (restricted P-256 signing key under the EK, persistent handle 0x81000002) and a
non-exportable P-256 device key (fixedTPM | fixedParent | sensitiveDataOrigin, under the SRK, persistent
handle 0x81000003) are created in the TPM or reused; (2) AK enrollment by credential activation at
``/attest/v1/ak/start`` + ``/finish`` (see :mod:`enrollment.attestation.routes`) yields a short-lived AK
certificate; (3) an ACME order (RFC 8555) for the EK-derived ``permanent-identifier`` and
``hardware-module`` identifiers is validated with ``device-attest-01`` (draft-ietf-acme-device-attest-09
§5: TPM2_Certify of the device key by the AK over H(key authorization)) and finalized with a CSR signed
inside the TPM; (4) DIR receives ``cert.pem``, ``chain.pem``, ``fullchain.pem``, ``key.json`` (reference
to the TPM-resident key: TCTI + persistent handle; the private key never leaves the TPM), the AK
certificate, the ACME account key and ``state.json``.

``renew``: asks the server's renewalInfo (RFC 9773) and renews only inside the suggested window (or
with ``--force``), reusing the TPM key, the account and (while valid) the AK certificate; the new
order names the replaced certificate (``replaces``).

Exit codes (ca.cli.common): 0 ok (also "not due yet"), 2 usage/config, 5 refused (bad attestation,
bad CSR, rejected identifier), 6 server/TPM unreachable, 7 unauthorized (EAB, blocked device).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import josepy as jose
import typer
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.cli.common import DEFAULT_DIR, ConfigOption, DirOption, JsonOption, cli_errors, console, fail, print_json
from ca.device_identity import HardwareModuleName, PermanentIdentifier
from enrollment.attestation.acme_challenge import DeviceAttest01, DeviceAttest01Response
from enrollment.attestation.device import DEFAULT_DEVICE_KEY_HANDLE, TpmDevice
from enrollment.attestation.wire import start_mac
from enrollment.posture.agent import collect_facts, read_event_log
from enrollment.posture.evidence import Evidence, qualifying_data

app = typer.Typer(help="TPM-bound device identity: enroll and renew with the device agent.", no_args_is_help=True)

PERMANENT_IDENTIFIER = messages.IdentifierType("permanent-identifier")  # registers the type with the library
HARDWARE_MODULE = messages.IdentifierType("hardware-module")
AK_RENEW_MARGIN = dt.timedelta(minutes=10)
POLL_INTERVAL = 0.2
STATE_FILE = "state.json"
EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_UNAUTHORIZED = 5, 6, 7
_UNAUTHORIZED = {"unauthorized", "externalAccountRequired", "accountDoesNotExist"}


class AgentError(Exception):
    """A refused or failed step; ``problem`` is the short ACME problem type when the server sent one."""

    def __init__(self, problem: str, detail: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem, self.detail, self.exit_code = problem, detail, exit_code

    @classmethod
    def from_problem(cls, doc: dict[str, Any] | Any, status: int = 400) -> AgentError:
        if isinstance(doc, messages.Error):
            doc = {"type": doc.typ, "detail": doc.detail}
        if not isinstance(doc, dict):
            doc = {}
        problem = str(doc.get("type", "serverInternal")).removeprefix("urn:ietf:params:acme:error:")
        code = EXIT_UNAUTHORIZED if problem in _UNAUTHORIZED else EXIT_UNAVAILABLE if status >= 500 else EXIT_REFUSED
        return cls(problem, str(doc.get("detail", ""))[:500], code)


class DeviceNewOrder(messages.NewOrder):
    """newOrder with RFC 9773 ``replaces`` (the acme library 5.x does not know it)."""

    replaces: str | None = jose.field("replaces", omitempty=True)


# -- AK enrollment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eab:
    """ACME External Account Binding key: id and base64url HMAC key (as ``ikepki acme eab create`` prints)."""

    kid: str
    hmac_key: str

    @property
    def key_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.hmac_key + "=" * (-len(self.hmac_key) % 4))


def attest_base(directory_url: str) -> str:
    """``https://host:port/acme/directory`` → ``https://host:port/attest``."""
    parts = urlsplit(directory_url)
    if parts.scheme != "https" or not parts.netloc:
        raise AgentError("malformed", "--acme must be an https:// directory URL", 2)
    return f"https://{parts.netloc}/attest"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AttestClient:
    """Client of ``/attest/v1/ak/start`` and ``/finish``."""

    def __init__(self, http: httpx.Client, base: str) -> None:
        self.http, self.base = http, base

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self.http.post(f"{self.base}{path}", json=body)
        except httpx.HTTPError as exc:
            raise AgentError("connection", f"{self.base}{path}: {type(exc).__name__}", EXIT_UNAVAILABLE) from exc
        try:
            data = resp.json()
        except ValueError:
            data = {"type": "serverInternal", "detail": f"HTTP {resp.status_code}"}
        if resp.status_code != 201:
            raise AgentError.from_problem(data, resp.status_code)
        return data  # type: ignore[no-any-return]

    def start(self, ek_der: bytes, ak_public: bytes, eab: Eab | None) -> dict[str, Any]:
        ek64, ak64 = _b64e(ek_der), _b64e(ak_public)
        body: dict[str, Any] = {"ekCertificate": ek64, "akPublic": ak64}
        if eab is not None:
            body["eab"] = {"kid": eab.kid, "mac": start_mac(eab.key_bytes, ek64, ak64)}
        return self._post("/v1/ak/start", body)

    def finish(self, challenge_id: str, secret: bytes) -> dict[str, Any]:
        return self._post("/v1/ak/finish", {"challengeId": challenge_id, "secret": _b64e(secret)})


def enroll_ak(device: TpmDevice, attest: AttestClient, eab: Eab | None) -> list[bytes]:
    """EK cert + AK public → credential blob → ActivateCredential → AK certificate chain (DER, leaf first)."""
    blob = attest.start(device.ek_certificate(), device.ak_public(), eab)
    secret = device.activate_credential(_b64d(blob["idObject"]), _b64d(blob["encryptedSecret"]))
    done = attest.finish(blob["challengeId"], secret)
    return [_b64d(done["akCertificate"]), *(_b64d(c) for c in done.get("chain", []))]


def posture_base(directory_url: str) -> str:
    """``https://host:port/acme/directory`` → ``https://host:port/posture``."""
    return attest_base(directory_url).removesuffix("/attest") + "/posture"


class PostureClient(AttestClient):
    """Client of ``/posture/v1/nonce`` and ``/evidence`` (:mod:`enrollment.posture.routes`)."""

    def nonce(self, ak_der: bytes) -> dict[str, Any] | None:
        """A fresh nonce and the PCR selection to quote, or None when the server has posture off (404)."""
        try:
            return self._post("/v1/nonce", {"akCertificate": _b64e(ak_der)})
        except AgentError as exc:
            if "posture is not configured" in exc.detail:
                return None
            raise

    def evidence(self, evidence: Evidence) -> dict[str, Any]:
        return self._post("/v1/evidence", evidence.wire())


def send_posture(tpm: TpmDevice, client: PostureClient, ak_der: bytes, facts: dict[str, Any],
                 event_log: bytes | None) -> dict[str, Any] | None:
    """Nonce → TPM2_Quote over the server's PCR selection with qualifying data H(nonce || H(facts)) →
    evidence; the server's verdict (None when posture is off). A refused verdict is an AgentError."""
    challenge = client.nonce(ak_der)
    if challenge is None:
        return None
    nonce = _b64d(challenge["nonce"])
    quote, signature, pcrs = tpm.quote(str(challenge["pcrSelection"]), qualifying_data(nonce, facts))
    verdict = client.evidence(Evidence(ak_der, nonce, quote, signature, pcrs, facts, event_log))
    if verdict.get("verdict") == "refused":
        raise AgentError("postureRefused", "; ".join(map(str, verdict.get("reasons", [])))[:500] or "refused")
    return verdict


def device_identifiers(ek_der: bytes) -> tuple[PermanentIdentifier, HardwareModuleName]:
    """The EK-derived identifiers (same derivation as the server, :mod:`ca.device_identity`)."""
    key = x509.load_der_x509_certificate(ek_der).public_key()
    return PermanentIdentifier.from_ek(key), HardwareModuleName.from_ek(key)


# -- ACME -------------------------------------------------------------------------------------------


class AcmeSession:
    """The acme library's ClientV2 plus the device-attest-01 steps it does not know."""

    def __init__(self, directory_url: str, account_key: ec.EllipticCurvePrivateKey, verify: str | bool) -> None:
        self.key = jose.JWKEC(key=account_key)
        net = acme_client.ClientNetwork(self.key, alg=jose.ES256, verify_ssl=verify,  # type: ignore[arg-type]
                                        user_agent="ikepki-device")  # requests takes a CA bundle path too
        # one connection per request: a run is a dozen requests, and the library leaks a pooled connection
        # when a request fails (it then holds the server's graceful shutdown open)
        net.session.headers["Connection"] = "close"
        try:
            self.client = acme_client.ClientV2(acme_client.ClientV2.get_directory(directory_url, net), net)
        except (acme_errors.Error, OSError) as exc:
            raise AgentError("connection", f"cannot read the ACME directory: {exc}", EXIT_UNAVAILABLE) from exc

    def close(self) -> None:
        """Close the HTTP connections (keep-alive) of the library's session."""
        self.client.net.session.close()

    def __enter__(self) -> AcmeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, eab: Eab | None) -> None:
        """New account (with EAB) or the existing one for this key."""
        cl = self.client
        binding = None
        if eab is not None:
            binding = messages.ExternalAccountBinding.from_data(
                account_public_key=self.key.public_key(), kid=eab.kid, hmac_key=eab.hmac_key, directory=cl.directory)
        try:
            regr = cl.new_account(messages.NewRegistration.from_data(
                terms_of_service_agreed=True, external_account_binding=binding))
        except acme_errors.ConflictError as exc:  # this key already has an account (renewal)
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        except messages.Error as exc:
            raise AgentError.from_problem(exc) from exc
        cl.net.account = regr

    def new_order(self, identifiers: list[tuple[messages.IdentifierType, str]], csr_pem: bytes,
                  replaces: str | None = None, profile: str = "machine") -> messages.OrderResource:
        cl = self.client
        order = DeviceNewOrder(identifiers=[messages.Identifier(typ=t, value=v) for t, v in identifiers],
                               profile=profile, replaces=replaces)
        try:
            resp = cl._post(cl.directory["newOrder"], order)
            body = messages.Order.from_json(resp.json())
            authzs = [cl._authzr_from_response(cl._post_as_get(url), uri=url) for url in body.authorizations]
        except messages.Error as exc:
            raise AgentError.from_problem(exc) from exc
        return messages.OrderResource(body=body, uri=resp.headers.get("Location"), authorizations=authzs,
                                      csr_pem=csr_pem)

    def key_authorization(self, challb: messages.ChallengeBody) -> str:
        return str(challb.chall.key_authorization(self.key))

    def answer_device_attest(self, order: messages.OrderResource, att_obj_for: Callable[[str], bytes]) -> None:
        """For every pending authz: attObj over its key authorization, POSTed to the challenge."""
        for authzr in order.authorizations:
            if authzr.body.status != messages.STATUS_PENDING:
                continue
            challb = next((c for c in authzr.body.challenges if isinstance(c.chall, DeviceAttest01)), None)
            if challb is None:
                raise AgentError("unsupportedIdentifier", "the server offered no device-attest-01 challenge")
            response = DeviceAttest01Response.from_att_obj(att_obj_for(self.key_authorization(challb)))
            try:
                self.client.answer_challenge(challb, response)
            except messages.Error as exc:
                raise AgentError.from_problem(exc) from exc

    def wait_authorizations(self, order: messages.OrderResource, timeout: float = 60) -> None:
        """Poll until every authorization left ``pending``; the first failed challenge becomes an AgentError."""
        cl = self.client
        deadline = time.monotonic() + timeout
        for url in order.body.authorizations:
            while True:
                authzr = cl._authzr_from_response(cl._post_as_get(url), uri=url)
                if authzr.body.status != messages.STATUS_PENDING:
                    break
                if time.monotonic() > deadline:
                    raise AgentError("connection", "timed out waiting for validation", EXIT_UNAVAILABLE)
                time.sleep(POLL_INTERVAL)
            if authzr.body.status != messages.STATUS_VALID:
                error = next((c.error for c in authzr.body.challenges if c.error is not None), None)
                raise AgentError.from_problem(error or {"type": "unauthorized", "detail": "authorization invalid"})

    def finalize(self, order: messages.OrderResource, timeout: float = 60) -> str:
        """POST the CSR; returns the PEM chain (leaf first)."""
        cl = self.client
        try:
            order = cl.begin_finalization(order)
            deadline = time.monotonic() + timeout
            while order.body.status != messages.STATUS_VALID:
                if order.body.status == messages.STATUS_INVALID:
                    raise AgentError.from_problem(order.body.error or {})
                if time.monotonic() > deadline:
                    raise AgentError("connection", "timed out waiting for issuance", EXIT_UNAVAILABLE)
                time.sleep(POLL_INTERVAL)
                order = order.update(body=messages.Order.from_json(cl._post_as_get(order.uri).json()))
            return str(cl._post_as_get(order.body.certificate).text)
        except messages.Error as exc:
            raise AgentError.from_problem(exc) from exc


# -- the device flow -------------------------------------------------------------------------------


@dataclass
class AgentConfig:
    acme: str
    tpm: str
    out: Path
    ek: str = "rsa"
    ca_bundle: str | None = None
    eab_kid: str | None = None
    eab_hmac_key_file: str | None = None
    handle: int = DEFAULT_DEVICE_KEY_HANDLE
    facts_file: str | None = None
    edr_processes: tuple[str, ...] = ()
    event_log: str | None = None

    def facts(self) -> dict[str, Any]:
        try:
            return collect_facts(self.edr_processes, Path(self.facts_file) if self.facts_file else None)
        except (ValueError, OSError) as exc:
            raise AgentError("malformed", f"facts: {exc}", 2) from exc

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else ssl.create_default_context()

    def eab(self) -> Eab | None:
        if not self.eab_kid:
            return None
        if not self.eab_hmac_key_file:
            raise AgentError("malformed", "--eab-kid needs --eab-hmac-key FILE", 2)
        return Eab(self.eab_kid, Path(self.eab_hmac_key_file).read_text().strip())

    def to_json(self) -> dict[str, Any]:
        return {"acme": self.acme, "tpm": self.tpm, "ek": self.ek, "ca_bundle": self.ca_bundle,
                "eab_kid": self.eab_kid, "eab_hmac_key_file": self.eab_hmac_key_file, "handle": hex(self.handle),
                "facts_file": self.facts_file, "edr_processes": list(self.edr_processes), "event_log": self.event_log}

    @classmethod
    def load(cls, out: Path) -> AgentConfig:
        data = json.loads((out / STATE_FILE).read_text())
        return cls(data["acme"], data["tpm"], out, data.get("ek", "rsa"), data.get("ca_bundle"), data.get("eab_kid"),
                   data.get("eab_hmac_key_file"), int(data.get("handle", hex(DEFAULT_DEVICE_KEY_HANDLE)), 16),
                   data.get("facts_file"), tuple(data.get("edr_processes", ())), data.get("event_log"))


class AgentTpm(TpmDevice):
    """TpmDevice plus reuse of an already persisted device key."""

    def __enter__(self) -> AgentTpm:
        return self

    def device_key_public(self, handle: int) -> bytes | None:
        """Marshalled TPMT_PUBLIC of the key at ``handle``, or None."""
        existing = self._persistent(handle)
        if existing is None:
            return None
        public, _, _ = self._ectx.read_public(existing)
        return bytes(public.publicArea.marshal())

    def ensure_device_key(self, handle: int) -> None:
        if self.device_key_public(handle) is None:
            self.create_device_key(handle)


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _account_key(out: Path) -> ec.EllipticCurvePrivateKey:
    path = out / "account-key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)
    return key


def _ak_chain(out: Path, force: bool) -> list[bytes] | None:
    """The stored AK chain while the AK certificate stays valid for the margin."""
    path = out / "ak-chain.pem"
    if force or not path.exists():
        return None
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    if certs[0].not_valid_after_utc - dt.datetime.now(dt.UTC) < AK_RENEW_MARGIN:
        return None
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _write_outputs(cfg: AgentConfig, fullchain: str, tpm_public: bytes) -> x509.Certificate:
    certs = x509.load_pem_x509_certificates(fullchain.encode())
    pem = [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    _write(cfg.out / "cert.pem", pem[0])
    _write(cfg.out / "chain.pem", b"".join(pem[1:]))
    _write(cfg.out / "fullchain.pem", b"".join(pem))
    spki = certs[0].public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    key_ref = {"type": "tpm2", "tcti": cfg.tpm, "handle": hex(cfg.handle), "uri": f"handle:{hex(cfg.handle)}",
               "public_key": _b64e(spki), "tpmt_public": _b64e(tpm_public),
               "note": "the private key lives only in the TPM (fixedTPM|fixedParent); this is a reference"}
    _write(cfg.out / "key.json", json.dumps(key_ref, indent=2) + "\n")
    _write(cfg.out / STATE_FILE, json.dumps(cfg.to_json(), indent=2) + "\n")
    return certs[0]


def run_enrollment(cfg: AgentConfig, *, replaces: str | None = None, new_ak_cert: bool = False,
                   new_key: bool = False) -> x509.Certificate:
    """The whole flow (module docstring); returns the issued certificate.

    Posture (issue 17): right after the AK step the agent answers a server nonce with a TPM quote and
    its facts (:func:`send_posture`); the verdict lands in ``posture.json`` and the certificate carries it.
    A refused verdict stops the run before the ACME order."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    eab = cfg.eab()
    with AcmeSession(cfg.acme, _account_key(cfg.out), cfg.verify) as session, \
            httpx.Client(verify=cfg.tls(), timeout=30) as http, AgentTpm(cfg.tpm, cfg.ek) as tpm:  # type: ignore[arg-type]
        chain = _ak_chain(cfg.out, new_ak_cert)
        if chain is None:
            chain = enroll_ak(tpm, AttestClient(http, attest_base(cfg.acme)), eab)
            _write(cfg.out / "ak-chain.pem", b"".join(
                x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in chain))
        event_log = None if cfg.event_log == "none" else read_event_log(Path(cfg.event_log) if cfg.event_log else None)
        posture = send_posture(tpm, PostureClient(http, posture_base(cfg.acme)), chain[0], cfg.facts(), event_log)
        if posture is not None:
            _write(cfg.out / "posture.json", json.dumps(posture, indent=2) + "\n")
        if new_key:
            tpm.create_device_key(cfg.handle)
        tpm.ensure_device_key(cfg.handle)
        tpm_public = tpm.device_key_public(cfg.handle) or b""
        permanent, hardware = device_identifiers(tpm.ek_certificate())
        csr_pem = tpm.build_csr([permanent, hardware], handle=cfg.handle).public_bytes(serialization.Encoding.PEM)
        session.register(eab)
        order = session.new_order([(PERMANENT_IDENTIFIER, permanent.acme_value()),
                                   (HARDWARE_MODULE, hardware.acme_value())], csr_pem, replaces)
        session.answer_device_attest(order, lambda key_auth: tpm.att_obj(key_auth, chain, cfg.handle))
        session.wait_authorizations(order)
        fullchain = session.finalize(order)
    return _write_outputs(cfg, fullchain, tpm_public)


def _ari_id(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    return f"{_b64e(aki)}.{_b64e(serial.to_bytes((serial.bit_length() + 8) // 8, 'big'))}"


def renewal_due(cfg: AgentConfig, cert: x509.Certificate) -> tuple[bool, dt.datetime | None]:
    """RFC 9773: inside the server's suggested window (or past 2/3 of the lifetime without renewalInfo)."""
    now = dt.datetime.now(dt.UTC)
    with AcmeSession(cfg.acme, _account_key(cfg.out), cfg.verify) as session:
        try:
            when, _ = session.client.renewal_time(cert.public_bytes(serialization.Encoding.PEM))
        except acme_errors.ARIError:
            when = None
    if when is None:
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        when = cert.not_valid_before_utc + lifetime * 2 / 3
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when <= now, when


# -- commands ---------------------------------------------------------------------------------------


def _report(cert: x509.Certificate, cfg: AgentConfig, json_out: bool, renewed: bool = True) -> None:
    result = {"renewed": renewed, "serial": format(cert.serial_number, "x"), "out": str(cfg.out),
              "not_after": cert.not_valid_after_utc.isoformat(), "tpm_handle": hex(cfg.handle)}
    posture_file = cfg.out / "posture.json"
    if posture_file.exists():
        posture = json.loads(posture_file.read_text())
        result["posture"] = {"verdict": posture.get("verdict"), "reasons": posture.get("reasons", [])}
    if json_out:
        print_json(result)
    else:
        console.print(f"certificate {result['serial']} (until {result['not_after']}) in {cfg.out}; "
                      f"key: TPM handle {result['tpm_handle']}", highlight=False)


def _agent_errors(fn: Callable[[], None]) -> None:
    try:
        fn()
    except AgentError as exc:
        raise fail(f"{exc.problem}: {exc.detail}", exc.exit_code) from None
    except acme_errors.Error as exc:
        raise fail(f"acme: {exc}", EXIT_REFUSED) from None
    except FileNotFoundError as exc:
        raise fail(f"file not found: {exc.filename}", 2) from None
    except (OSError, httpx.HTTPError) as exc:
        raise fail(f"connection: {exc}", EXIT_UNAVAILABLE) from None


AcmeOption = Annotated[str, typer.Option("--acme", help="ACME directory URL (https://HOST:8443/acme/directory).")]
TpmOption = Annotated[str, typer.Option("--tpm", help="TCTI, e.g. swtpm:host=127.0.0.1,port=2321")]
OutOption = Annotated[Path, typer.Option("--out", help="Directory for the chain, key reference and state.")]
CaOption = Annotated[str | None, typer.Option("--ca-bundle", help="PEM file of CAs to trust for HTTPS.")]
KidOption = Annotated[str | None, typer.Option("--eab-kid", help="ACME External Account Binding key id.")]
HmacOption = Annotated[str | None, typer.Option("--eab-hmac-key", help="File holding the base64url EAB HMAC key.")]
EkOption = Annotated[str, typer.Option("--ek", help="EK to use: rsa (RSA-2048 L-1) or ecc (P-384 H-3).")]
FactsOption = Annotated[str | None, typer.Option("--facts", help="JSON file of extra self-reported posture facts.")]
EdrOption = Annotated[list[str] | None, typer.Option("--edr-process", help="Process name of the EDR agent.")]
EventLogOption = Annotated[str | None, typer.Option("--event-log", help="TCG boot event log file (default: the "
                                                    "kernel's binary_bios_measurements when readable; none: "
                                                    "send no log).")]


@app.command("enroll")
def enroll(acme: AcmeOption, tpm: TpmOption, out: OutOption, ca_bundle: CaOption = None, eab_kid: KidOption = None,
           eab_hmac_key: HmacOption = None, ek: EkOption = "rsa",
           new_key: Annotated[bool, typer.Option("--new-key", help="Replace the TPM device key.")] = False,
           facts: FactsOption = None, edr_process: EdrOption = None, event_log: EventLogOption = None,
           json_out: JsonOption = False) -> None:
    """Enroll this device: AK by credential activation, posture evidence (TPM quote), then an ACME machine
    certificate (device-attest-01)."""
    if ek not in ("rsa", "ecc"):
        raise fail("--ek must be rsa or ecc", 2)
    cfg = AgentConfig(acme, tpm, out, ek, ca_bundle, eab_kid, eab_hmac_key, facts_file=facts,
                      edr_processes=tuple(edr_process or ()), event_log=event_log)
    _agent_errors(lambda: _report(run_enrollment(cfg, new_ak_cert=True, new_key=new_key), cfg, json_out))


@app.command("renew")
def renew(out: OutOption, acme: Annotated[str | None, typer.Option("--acme")] = None,
          tpm: Annotated[str | None, typer.Option("--tpm")] = None, ca_bundle: CaOption = None,
          force: Annotated[bool, typer.Option("--force", help="Renew even outside the renewal window.")] = False,
          facts: FactsOption = None, event_log: EventLogOption = None,
          json_out: JsonOption = False) -> None:
    """Renew the certificate in DIR when due (ACME renewalInfo), reusing the TPM key and identity; sends
    fresh posture evidence every time."""

    def run() -> None:
        cfg = AgentConfig.load(out)
        cfg.acme, cfg.tpm = acme or cfg.acme, tpm or cfg.tpm
        cfg.ca_bundle = ca_bundle or cfg.ca_bundle
        cfg.facts_file, cfg.event_log = facts or cfg.facts_file, event_log or cfg.event_log
        current = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
        due, when = renewal_due(cfg, current)
        if not (due or force):
            if json_out:
                print_json({"renewed": False, "renewal_time": when.isoformat() if when else None})
            else:
                console.print(f"not due: renewal window starts {when.isoformat() if when else '?'}", highlight=False)
            return
        _report(run_enrollment(cfg, replaces=_ari_id(current)), cfg, json_out)

    _agent_errors(run)


@app.command("posture")
@cli_errors
def posture(device: Annotated[str, typer.Argument(help="Device id (permanent identifier, as in ikepki list).")],
            directory: DirOption = DEFAULT_DIR, config: ConfigOption = None,
            limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 10, json_out: JsonOption = False) -> None:
    """Operator view: the device's latest posture evidence and verdict, with earlier verdicts."""
    from ca.cli.common import open_deployment
    from enrollment.posture.routes import posture_service

    shown = posture_service(open_deployment(directory, config)).show(device, limit)
    if json_out:
        print_json(shown)
        return
    latest = shown["latest"]
    console.print(f"{device}: {latest['verdict']} ({latest['origin']}, class {latest['deviceClass'] or '-'}, "
                  f"received {latest['received']}, evidence expires {latest['expires']})", highlight=False)
    for reason in latest["reasons"]:
        console.print(f"  - {reason}", highlight=False)
    for bank, values in latest["pcrs"].items():
        console.print(f"  {bank}: " + ", ".join(f"{i}={v[:12]}…" for i, v in values.items()), highlight=False)
    if latest["facts"]:
        console.print("  facts: " + json.dumps(latest["facts"], sort_keys=True), highlight=False)
    for older in shown["history"]:
        console.print(f"  earlier: {older['received']} {older['verdict']} ({older['origin']})", highlight=False)


__all__ = [
    "AcmeSession",
    "AgentConfig",
    "AgentError",
    "AgentTpm",
    "AttestClient",
    "Eab",
    "PostureClient",
    "app",
    "attest_base",
    "device_identifiers",
    "enroll_ak",
    "run_enrollment",
    "send_posture",
]
