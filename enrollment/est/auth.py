"""EST client authentication (RFC 7030 §3.2.3, §3.3.2): TLS client certificates (directly or
from a trusted ingress header), HTTP Basic per MDM pipeline, and one-time enrollment secrets.

HTTP Basic costs one PBKDF2 per attempt that is not a remembered success, whatever the user name:
a pipeline's own hash, or a dummy hash with the pipelines' parameters for any other name, so
response times do not reveal which pipeline names (or device ids) exist. The one exception is a
device id sent with its correct one-time secret: that secret is a 192-bit random value stored as
SHA-256 and compared in constant time (``registrations.secret_matches``), so the request is
authenticated without any KDF; only a caller who already holds the secret can take that fast path,
and the answer (not 401) tells them no more than the timing does. Every name is looked up as a
device id before the KDF, pipeline names included, so the lookup itself is no oracle either. The
PBKDF2 runs under :class:`KdfThrottle`: callers wait in the event loop (holding no worker thread),
at most ``slots`` computations run at once, and once ``queue`` callers are waiting further ones
are refused at once (HTTP 429 with Retry-After), so password guessing cannot starve other
requests of worker threads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from enum import Enum

import anyio
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

    def __init__(self) -> None:
        self._ok: dict[tuple[str, bytes, str], None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(user: str, password: str, encoded: str) -> tuple[str, bytes, str]:
        return user, hashlib.sha256(password.encode()).digest(), encoded

    def cached(self, user: str, password: str, encoded: str) -> bool:
        with self._lock:
            return self._key(user, password, encoded) in self._ok

    def remember(self, user: str, password: str, encoded: str) -> None:
        with self._lock:
            if len(self._ok) >= _CACHE_MAX:
                self._ok.clear()
            self._ok[self._key(user, password, encoded)] = None

    def check(self, user: str, password: str, encoded: str) -> bool:
        """Blocking check (callers outside the event loop; HTTP goes through :class:`KdfThrottle`)."""
        if self.cached(user, password, encoded):
            return True
        if not verify_password(password, encoded):
            return False
        self.remember(user, password, encoded)
        return True


class Throttled(Exception):
    """Too many password checks waiting: answer 429 with Retry-After."""


class KdfThrottle:
    """At most ``slots`` PBKDF2 computations at once (each in a worker thread), at most ``queue``
    callers waiting for a slot in the event loop; more are refused with :class:`Throttled`."""

    def __init__(self, slots: int = 2, queue: int = 32) -> None:
        self.slots, self.queue = slots, queue
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    async def verify(self, password: str, encoded: str) -> bool:
        if self.waiting >= self.queue:
            raise Throttled(f"{self.waiting} password checks already waiting")
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        try:
            return await anyio.to_thread.run_sync(verify_password, password, encoded)
        finally:
            self._sem.release()


def _iterations(encoded: str) -> int:
    parts = encoded.split("$")
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else PBKDF2_ITERATIONS


class Authenticator:
    def __init__(self, settings: EstSettings, registrations: RegistrationStore, store: object, clock: object) -> None:
        self.settings = settings
        self.registrations = registrations
        self.store = store
        self.clock = clock
        self.passwords = PasswordCache()
        self.throttle = KdfThrottle()
        iterations = max((_iterations(p.password_hash) for p in settings.pipelines.values()), default=PBKDF2_ITERATIONS)
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), iterations)  # for names that are no pipeline
        self._ra_subjects = [x509.Name.from_rfc4514_string(s) for s in settings.ra_subjects]
        self._ra_ekus = {ObjectIdentifier(o) for o in settings.ra_ekus}

    async def check_basic(self, user: str, password: str) -> bool | None:
        """The PBKDF2 part of HTTP Basic, throttled and off the worker pool (see module docstring):
        True/False for a pipeline's password, None for any other name (after the same work against
        the dummy hash, unless it is a device id with its correct secret: no KDF then). Raises
        :class:`Throttled` when too many checks are waiting."""
        pipeline = self.settings.pipelines.get(user)
        encoded = pipeline.password_hash if pipeline is not None else self._dummy_hash
        if pipeline is not None and self.passwords.cached(user, password, encoded):
            return True
        registration = await anyio.to_thread.run_sync(self.registrations.get, user)
        if pipeline is None and registration is not None and secret_matches(registration, password):
            return None  # basic() compares again and checks expiry and use
        ok = await self.throttle.verify(password, encoded)
        if pipeline is None:
            return None
        if ok:
            self.passwords.remember(user, password, encoded)
        return ok

    def basic(self, user: str, password: str, checked: bool | None = None) -> Principal:
        """A pipeline (configured user) or a device (registered id + its one-time secret).
        ``checked``: the result of :meth:`check_basic` for this request, if it ran."""
        pipeline = self.settings.pipelines.get(user)
        if pipeline is not None:
            ok = checked if checked is not None else self.passwords.check(user, password, pipeline.password_hash)
            if not ok:
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
