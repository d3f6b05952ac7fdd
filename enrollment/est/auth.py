"""EST client authentication (RFC 7030 §3.2.3, §3.3.2): TLS client certificates (directly or
from a trusted ingress header), HTTP Basic per MDM pipeline, and one-time enrollment secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertStatus
from enrollment.est.registrations import Registration, RegistrationStore, secret_matches
from enrollment.est.settings import EstSettings, PipelineSettings

PBKDF2_ITERATIONS = 200_000
_CACHE_MAX = 1024


class PrincipalKind(Enum):
    PIPELINE = "pipeline"  # HTTP Basic, configured MDM pipeline
    DEVICE = "device"  # HTTP Basic, device id + one-time enrollment secret
    CLIENT_CERT = "client-cert"  # TLS client certificate issued by this CA (re-enrollment)
    RA = "ra"  # TLS client certificate of a registration authority


AUTH_METHOD = {PrincipalKind.PIPELINE: "basic", PrincipalKind.DEVICE: "enrollment-secret",
               PrincipalKind.CLIENT_CERT: "client-cert", PrincipalKind.RA: "client-cert"}


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    name: str
    pipeline: PipelineSettings | None = None
    registration: Registration | None = None
    secret_sha256: str | None = None
    cert_info: CertificateInfo | None = None

    @property
    def display(self) -> str:
        return f"{self.kind.value}:{self.name}"


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` for ``est.pipelines.<name>.password_hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        algo, iterations, salt, digest = encoded.split("$")
        if algo != "pbkdf2_sha256":
            return False
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(computed, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


class PasswordCache:
    """Successful PBKDF2 checks remembered by (user, SHA-256(password)): pipelines send the same
    credentials on every request, and PBKDF2 would otherwise dominate the request cost."""

    def __init__(self, concurrent_checks: int = 2) -> None:
        self._ok: dict[tuple[str, bytes, str], None] = {}
        self._lock = threading.Lock()
        # wrong passwords always cost a full PBKDF2: bound how many run at once so that guessing
        # cannot take every worker thread and core from real enrollments
        self._slots = threading.BoundedSemaphore(concurrent_checks)

    def check(self, user: str, password: str, encoded: str) -> bool:
        key = (user, hashlib.sha256(password.encode()).digest(), encoded)
        with self._lock:
            if key in self._ok:
                return True
        with self._slots:
            ok = verify_password(password, encoded)
        if not ok:
            return False
        with self._lock:
            if len(self._ok) >= _CACHE_MAX:
                self._ok.clear()
            self._ok[key] = None
        return True


class Authenticator:
    def __init__(self, settings: EstSettings, registrations: RegistrationStore, store: object, clock: object) -> None:
        self.settings = settings
        self.registrations = registrations
        self.store = store
        self.clock = clock
        self.passwords = PasswordCache()
        self._ra_subjects = [x509.Name.from_rfc4514_string(s) for s in settings.ra_subjects]
        self._ra_ekus = {ObjectIdentifier(o) for o in settings.ra_ekus}

    def basic(self, user: str, password: str) -> Principal:
        """A pipeline (configured user) or a device (registered id + its one-time secret)."""
        pipeline = self.settings.pipelines.get(user)
        if pipeline is not None:
            if not self.passwords.check(user, password, pipeline.password_hash):
                raise PKIError(ErrorKind.UNAUTHORIZED, "wrong user name or password")
            return Principal(PrincipalKind.PIPELINE, user, pipeline=pipeline)
        registration = self.registrations.get(user)
        matched = secret_matches(registration, password)  # hashes even for unknown ids (no timing oracle)
        if registration is None or not matched:
            raise PKIError(ErrorKind.UNAUTHORIZED, "wrong user name or password")
        now = self.clock.now()  # type: ignore[attr-defined]
        if registration.expires_at <= now:
            raise PKIError(ErrorKind.FORBIDDEN, f"the enrollment secret of device {user} has expired")
        if registration.used and registration.serial is not None:
            raise PKIError(ErrorKind.FORBIDDEN, f"the enrollment secret of device {user} was already used")
        return Principal(PrincipalKind.DEVICE, user, registration=registration,
                         secret_sha256=registration.secret_sha256)

    def client_cert(self, cert: x509.Certificate) -> Principal:
        """§3.3.2: a certificate this CA issued, valid now and not revoked (we check the store;
        the TLS layer checked the chain but not the validity period)."""
        now = self.clock.now()  # type: ignore[attr-defined]
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise PKIError(ErrorKind.FORBIDDEN, "client certificate is expired or not yet valid")
        info = self.store.get(cert.serial_number)  # type: ignore[attr-defined]
        if info is None or not hmac.compare_digest(info.der, cert.public_bytes(Encoding.DER)):
            raise PKIError(ErrorKind.FORBIDDEN, "client certificate was not issued by this CA")
        if info.status is not CertStatus.valid:
            raise PKIError(ErrorKind.FORBIDDEN, f"client certificate is {info.status.value}")
        name = next(iter(info.sans), info.subject) or info.serial_hex
        kind = PrincipalKind.RA if self.is_ra(cert) else PrincipalKind.CLIENT_CERT
        return Principal(kind, name, cert_info=info)

    def is_ra_subject(self, subject: x509.Name) -> bool:
        return any(subject == name for name in self._ra_subjects)

    def is_ra(self, cert: x509.Certificate) -> bool:
        if self.is_ra_subject(cert.subject):
            return True
        if not self._ra_ekus:
            return False
        try:
            ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            return False
        return bool(ekus & self._ra_ekus)
