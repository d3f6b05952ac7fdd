"""A deployment directory opened as live objects: settings, store, HSM keys, issuers, Authority.

Only one SoftHSM configuration can be active per process (SoftHSM reads SOFTHSM2_CONF
once, at C_Initialize), so a process opens one deployment's token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from ca.audit import AuditLog
from ca.authority import Authority
from ca.ceremony import (
    DEFAULT_CEREMONY,
    INIT_INCOMPLETE,
    Ceremony,
    InitResult,
    KeyMaker,
    build_ca_certificate,
    has_ca,
    init_softhsm_token,
    make_tls_key,
    wipe,
    write_secret,
)
from ca.clock import Clock, SystemClock
from ca.config import CaSettings, ConfigSource, S
from ca.errors import ErrorKind, PKIError
from ca.issuer import Issuer, IssuerUrls
from ca.keys.pin import Pin, resolve_pin
from ca.keys.pkcs11 import Pkcs11Token, open_token
from ca.keys.signer import SigningKey
from ca.keys.uri import parse as parse_uri
from ca.model import IssuedCertificate, Requester
from ca.ports import CoreServices
from ca.profiles import BUILTIN_PROFILES, Profile, subject_policy_from_config, with_lifetimes, with_subject_policies
from ca.store.db import Database
from ca.store.sql import SqlCertificateStore

MANIFEST = "deployment.yaml"


def _pem(path: Path, certs: list[x509.Certificate]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))


@dataclass(frozen=True)
class ServiceKey:
    name: str
    key: SigningKey
    certificate: x509.Certificate
    issuer_id: str


class Deployment:
    """Everything a process needs, built lazily from DIR, its config and the manifest."""

    def __init__(self, directory: Path, config: ConfigSource, clock: Clock | None = None) -> None:
        self.dir = directory.resolve()
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.settings: CaSettings = config.settings(CaSettings)
        self._apply_softhsm_env()

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config_path: Path | None = None, clock: Clock | None = None,
             require_ca: bool = True) -> Deployment:
        directory = directory.resolve()
        if require_ca and not (directory / MANIFEST).exists():
            raise PKIError(ErrorKind.CONFIG, f"no ikepki deployment in {directory} (run: ikepki init --dir …)")
        if require_ca and (directory / INIT_INCOMPLETE).exists():
            raise PKIError(ErrorKind.CONFIG, f"the ikepki init in {directory} did not finish (or is still running); "
                                             "if it was interrupted, run it again with --force")
        return cls(directory, ConfigSource.load(config_path or directory / "ikepki.yaml"), clock)

    def _apply_softhsm_env(self) -> None:
        conf = self.settings.softhsm_conf or (str(self.dir / "softhsm2.conf")
                                              if (self.dir / "softhsm2.conf").exists() else None)
        if conf and "SOFTHSM2_CONF" not in os.environ:
            os.environ["SOFTHSM2_CONF"] = str(self.path(conf))

    def path(self, value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.dir / p

    def settings_for(self, cls: type[S], section: str) -> S:
        return self.config.settings(cls, section)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        data = yaml.safe_load((self.dir / MANIFEST).read_text())
        if not isinstance(data, dict):
            raise PKIError(ErrorKind.CONFIG, f"{self.dir / MANIFEST} is damaged")
        return data

    # -- live objects -------------------------------------------------------------------------

    @cached_property
    def database_url(self) -> str:
        return self.settings.database_url or f"sqlite:///{self.dir / 'ikepki.db'}"

    @cached_property
    def db(self) -> Database:
        return Database(self.database_url)

    @cached_property
    def store(self) -> SqlCertificateStore:
        return SqlCertificateStore(self.db)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.path(self.settings.audit_log or "audit.log"))

    def pin(self) -> Pin:
        if self.settings.hsm_pin_env:
            return resolve_pin(f"env:{self.settings.hsm_pin_env}")
        recorded = self.manifest.get("token", {}).get("pin_source") if (self.dir / MANIFEST).exists() else None
        if recorded and not self.settings.hsm_pin_file:
            return resolve_pin(recorded, base=self.dir)
        return resolve_pin(f"file:{self.settings.hsm_pin_file or 'hsm-pin'}", base=self.dir)

    @cached_property
    def token(self) -> Pkcs11Token:
        module = self.manifest.get("token", {}).get("module") or self.settings.hsm_module
        label = self.manifest.get("token", {}).get("label") or self.settings.hsm_token_label
        if "IKEPKI_HSM_MODULE" in os.environ:
            module = self.settings.hsm_module
        if "IKEPKI_HSM_TOKEN_LABEL" in os.environ:
            label = self.settings.hsm_token_label
        return open_token(module, label, self.pin())

    def signing_key(self, ref: str, rsa_pss: bool = False) -> SigningKey:
        """A key by manifest reference: an RFC 7512 URI, or ``software:PATH`` (dev/bench only)."""
        if ref.startswith("software:"):
            key = serialization.load_pem_private_key(self.path(ref[len("software:"):]).read_bytes(), None)
            return SigningKey(ref, key, rsa_pss=rsa_pss)  # type: ignore[arg-type]
        uri = parse_uri(ref)
        if not uri.object:
            raise PKIError(ErrorKind.CONFIG, f"PKCS#11 URI without object: {uri.without_secrets()}")
        return self.token.signing_key(uri.object, rsa_pss=rsa_pss)

    @cached_property
    def root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.path(self.manifest["root"]["cert"]).read_bytes())

    @cached_property
    def issuers(self) -> dict[str, Issuer]:
        out = {}
        for issuer_id, entry in self.manifest["issuers"].items():
            cert = x509.load_pem_x509_certificate(self.path(entry["cert"]).read_bytes())
            out[issuer_id] = Issuer(issuer_id, cert, self.signing_key(entry["key"], entry.get("rsa_pss", False)),
                                    (), self.root, IssuerUrls.for_issuer(self.settings.public_base_url, issuer_id,
                                                                  self.settings.ocsp_base_url))
        return out

    @cached_property
    def profiles(self) -> dict[str, Profile]:
        overrides: dict[str, dict[str, timedelta]] = {}
        subjects = {}
        for name, lt in self.settings.profiles.items():
            values = {}
            if lt.default_hours is not None:
                values["default_lifetime"] = timedelta(hours=lt.default_hours)
            if lt.max_hours is not None:
                values["max_lifetime"] = timedelta(hours=lt.max_hours)
            overrides[name] = values
            if lt.subject is not None:
                subjects[name] = subject_policy_from_config(name, lt.subject)
        return with_subject_policies(with_lifetimes(BUILTIN_PROFILES, overrides), subjects)

    @cached_property
    def authority(self) -> Authority:
        return Authority(self.issuers, self.store, self.profiles, self.audit, self.clock)

    def service_key(self, name: str) -> ServiceKey:
        entry = self.manifest.get("service_keys", {}).get(name)
        if entry is None:
            raise PKIError(ErrorKind.CONFIG, f"no service key {name!r} in this deployment")
        cert = x509.load_pem_x509_certificate(self.path(entry["cert"]).read_bytes())
        return ServiceKey(name, self.signing_key(entry["key"]), cert, entry["issuer"])

    def service_key_names(self) -> list[str]:
        return list(self.manifest.get("service_keys", {}))

    @property
    def tls_files(self) -> tuple[Path, Path]:
        tls = self.manifest["tls"]
        return self.path(tls["cert"]), self.path(tls["key"])

    def admin_token(self) -> str:
        return self.path(self.settings.admin_token_file or "admin-token").read_text().strip()

    def live(self) -> list[str]:
        """Liveness problems: the HSM token has failed every operation for longer than
        ``hsm_unhealthy_after_seconds`` (sessions are re-opened meanwhile; a restart is the next
        step). No HSM call here: the state comes from the calls traffic and /readyz make."""
        token = self.__dict__.get("token")
        limit = self.settings.hsm_unhealthy_after_seconds
        if token is None or (failing := token.unusable_for()) <= limit:
            return []
        return [f"hsm: unusable for {failing:.0f} s (limit {limit:.0f} s)"]

    def ready(self) -> dict[str, bool]:
        """Readiness: the database answers and the HSM signs."""
        db_ok = self.db.ping()
        try:
            issuer = next(iter(self.issuers.values()))
            issuer.key.key.public_key()
            hsm_ok = self.token.has_key(parse_uri(self.manifest["issuers"][issuer.id]["key"]).object or "") \
                if not self.manifest["issuers"][issuer.id]["key"].startswith("software:") else True
        except (PKIError, KeyError, StopIteration):
            hsm_ok = False
        return {"database": db_ok, "hsm": hsm_ok}


INIT_LOCK = ".init.lock"


def init_database_url(directory: Path) -> str:
    """The store ``ikepki init`` migrates and records into: ``IKEPKI_DATABASE_URL``, else SQLite in ``directory``."""
    return os.environ.get("IKEPKI_DATABASE_URL") or f"sqlite:///{directory / 'ikepki.db'}"


def _refuse_shared_database_with_records() -> None:
    """``--force`` wipes the directory, SQLite included; a database of its own (``IKEPKI_DATABASE_URL``)
    ikepki never deletes, and the CA it replaces must not leave certificates there (under the
    same issuer ids) beside the new one's: refuse while it holds any."""
    url = os.environ.get("IKEPKI_DATABASE_URL")
    if not url:
        return
    db = Database(url)
    try:
        held = SqlCertificateStore(db).count()
    except Exception:  # no schema yet (the earlier ceremony stopped before it migrated): nothing to keep
        return
    finally:
        db.dispose()
    if held:
        raise PKIError(ErrorKind.CONFLICT, f"the database at IKEPKI_DATABASE_URL still holds {held} certificate(s) "
                                           "of the CA being replaced; init --force does not delete a database: "
                                           "recreate it (or point IKEPKI_DATABASE_URL at an empty one) first")


def init_deployment(directory: Path, ceremony_path: Path | None = None, force: bool = False,
                    clock: Clock | None = None, *, if_missing: bool = False, actor: str = "ikepki init") -> InitResult:
    """Run the ceremony into ``directory``; refuses to overwrite an existing CA unless forced.

    Several processes may start it at once (every api replica's init-ca container on a fresh
    volume and database): they are serialized by the deployment-wide ``init`` lock
    (:mod:`ca.store.locks`, a PostgreSQL advisory lock or a flock), and whether a deployment
    exists is decided under it. ``if_missing``: a complete deployment already there is success
    with nothing made (:attr:`InitResult.existing`); without it, as without the lock, an
    existing CA is a conflict. ``actor`` names who ran it in the audit line (the CLI user)."""
    from ca.store.locks import exclusive

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive(init_database_url(directory), directory / INIT_LOCK, "init"):
        if not force and (directory / INIT_INCOMPLETE).exists():  # we hold the lock: that one is not running
            raise PKIError(ErrorKind.CONFLICT, f"an earlier ikepki init in {directory} did not finish; "
                                               "remove what it made with: ikepki init --force")
        if if_missing and not force and (directory / MANIFEST).exists():
            return InitResult(directory, existing=True)
        return _init_locked(directory, ceremony_path, force, clock, actor)


def _init_locked(directory: Path, ceremony_path: Path | None, force: bool, clock: Clock | None,
                 actor: str) -> InitResult:
    if has_ca(directory) or (directory / INIT_INCOMPLETE).exists():
        if not force:
            raise PKIError(ErrorKind.CONFLICT, f"{directory} already holds a CA (use --force to replace it)")
        _refuse_shared_database_with_records()
        wipe(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a mounted volume may belong to root (Kubernetes fsGroup)
        os.chmod(directory, 0o700)
    ceremony = Ceremony.load(ceremony_path or DEFAULT_CEREMONY)
    (directory / INIT_INCOMPLETE).write_text("ikepki init started; removed when it finishes\n")
    result = InitResult(directory)
    clock = clock or SystemClock()
    now = clock.now()

    label = ceremony.token.label
    if "IKEPKI_HSM_TOKEN_LABEL" in os.environ:  # the override Deployment.token honours (charts/ikepki sets it)
        label = ConfigSource.load(directory / "ikepki.yaml").settings(CaSettings).hsm_token_label
    token_info: dict[str, Any] = {"label": label}
    token = None
    if ceremony.key_backend == "pkcs11":
        if ceremony.token.module:  # an existing token on a real HSM
            token_info["module"] = ceremony.token.module
            token_info["pin_source"] = ceremony.token.pin_source or "env:IKEPKI_HSM_PIN"
            pin = resolve_pin(token_info["pin_source"], base=directory)
        else:
            pre = ConfigSource.load(directory / "ikepki.yaml").settings(CaSettings)
            so_pin_env = os.environ.get("IKEPKI_HSM_SO_PIN_FILE")
            conf, pin = init_softhsm_token(directory, label,
                                           Path(pre.hsm_pin_file) if pre.hsm_pin_file else None,
                                           Path(so_pin_env) if so_pin_env else None)
            result.made.append(("SoftHSM token", f"{label} ({conf})"))
        settings = ConfigSource.load(directory / "ikepki.yaml").settings(CaSettings)
        token = open_token(ceremony.token.module or settings.hsm_module, label, pin)
    maker = KeyMaker(ceremony.key_backend, token, directory)
    base_settings = ConfigSource.load(directory / "ikepki.yaml").settings(CaSettings)
    base_url = base_settings.public_base_url.rstrip("/")
    ocsp_base = (base_settings.ocsp_base_url or base_url).rstrip("/")

    root_key, root_ref = maker.make("root-ca", ceremony.root.key)
    root_name = x509.Name.from_rfc4514_string(ceremony.root.subject)
    root = build_ca_certificate(root_name, root_key, root_name, root_key, now, ceremony.root.lifetime_days, None,
                                None, None)
    _pem(directory / "root-ca.pem", [root])
    result.made.append(("root CA", f"{ceremony.root.subject} [{ceremony.root.key}] -> root-ca.pem"))
    manifest: dict[str, Any] = {"version": 1, "key_backend": ceremony.key_backend, "token": token_info,
                                "root": {"cert": "root-ca.pem", "key": root_ref}, "issuers": {}, "service_keys": {}}
    for issuer_id, spec in ceremony.issuers.items():
        key, ref = maker.make(f"issuing-{issuer_id}", spec.key)
        cert = build_ca_certificate(x509.Name.from_rfc4514_string(spec.subject), key, root_name, root_key, now,
                                    spec.lifetime_days, 0, f"{base_url}/crl/root.crl", f"{base_url}/ca/root.der",
                                    root.not_valid_after_utc, ocsp_url=f"{ocsp_base}/ocsp")
        _pem(directory / "ca" / f"{issuer_id}.pem", [cert])
        manifest["issuers"][issuer_id] = {"cert": f"ca/{issuer_id}.pem", "key": ref,
                                          "rsa_pss": spec.key.startswith("rsa-pss")}
        result.made.append((f"issuing CA {issuer_id}", f"{spec.subject} [{spec.key}] -> ca/{issuer_id}.pem"))
    for name, svc in ceremony.service_keys.items():
        _, ref = maker.make(name, svc.key)
        manifest["service_keys"][name] = {"cert": f"services/{name}.pem", "key": ref, "issuer": svc.issuer,
                                          "profile": svc.profile}
    manifest["tls"] = {"cert": "tls/server.pem", "key": "tls/server.key"}
    (directory / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    if not (directory / "ikepki.yaml").exists():
        (directory / "ikepki.yaml").write_text(DEFAULT_CONFIG)
    from ca.store import migrate

    migrate.upgrade(init_database_url(directory), lock_file=directory / migrate.LOCK_FILE)
    result.made.append(("store", (os.environ.get("IKEPKI_DATABASE_URL") and "database at IKEPKI_DATABASE_URL")
                        or "ikepki.db (SQLite, WAL)"))

    dep = Deployment.open(directory, clock=clock, require_ca=False)
    _issue_service_certs(dep, ceremony, result, Requester("ceremony", actor))
    token_file = dep.path(dep.settings.admin_token_file or "admin-token")
    if token_file.exists() and token_file.read_text().strip():  # provided (e.g. a Kubernetes Secret)
        token_value = token_file.read_text().strip()
    else:
        token_value = secrets.token_urlsafe(32)
        write_secret(token_file, token_value)
    dep.store.add_admin_token("admin", "admin", token_value, now)
    result.made.append(("admin API credential", "admin-token (role admin)"))
    dep.audit.append(now, actor, "init", "cli", root=root.subject.rfc4514_string(),
                     issuers=list(manifest["issuers"]))
    (directory / INIT_INCOMPLETE).unlink()
    return result


def _issue_service_certs(dep: Deployment, ceremony: Ceremony, result: InitResult, requester: Requester) -> None:
    for name, svc in ceremony.service_keys.items():
        key = dep.signing_key(dep.manifest["service_keys"][name]["key"])
        issued = issue_service_cert(dep, svc.profile, svc.issuer, key, x509.Name.from_rfc4514_string(svc.subject),
                                    requester)
        _pem(dep.path(f"services/{name}.pem"), [issued.certificate, *issued.chain])
        result.made.append((f"service certificate {name}", f"{svc.subject} -> services/{name}.pem"))
    tls_key = make_tls_key(dep.dir)
    sans = [_parse_san(s) for s in ceremony.tls_server.sans]
    issued = dep.authority.issue_internal("tls-server", tls_key.public_key(),
                                          x509.Name.from_rfc4514_string(ceremony.tls_server.subject), sans,
                                          requester=requester)
    _pem(dep.path("tls/server.pem"), [issued.certificate, *issued.chain])
    result.made.append(("HTTPS server certificate", f"{', '.join(ceremony.tls_server.sans)} -> tls/server.pem"))


def issue_service_cert(dep: CoreServices, profile: str, issuer_id: str, key: SigningKey, subject: x509.Name,
                       requester: Requester) -> IssuedCertificate:
    """Issue (or re-issue, on rotation) a service certificate for an HSM key from ``issuer_id``."""
    return dep.authority.issue_internal(profile, key.key.public_key(), subject, requester=requester, issuer=issuer_id)


def _parse_san(text: str) -> x509.GeneralName:
    import ipaddress

    kind, _, value = text.partition(":")
    if kind == "DNS":
        return x509.DNSName(value)
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "email":
        return x509.RFC822Name(value)
    raise PKIError(ErrorKind.CONFIG, f"unsupported SAN {text!r} (DNS:, IP:, email:)")


DEFAULT_CONFIG = """\
# ikepki settings. Every key can be overridden by an environment variable IKEPKI_<KEY>
# (nested sections: IKEPKI_<SECTION>_<KEY>, e.g. IKEPKI_ACME_HTTP01_PORT).
# database_url: postgresql+psycopg://ikepki@db/ikepki   # default: SQLite at DIR/ikepki.db
public_base_url: http://127.0.0.1:8080   # base of the OCSP/CRL/caIssuers URLs in issued certs
host: 127.0.0.1
https_port: 8443
http_port: 8080
# profiles:
#   machine: {default_hours: 24, max_hours: 168}
#   # subject attribute values a requester may ask for (default: none beyond a commonName equal to
#   # an authorized identifier and what a registration granted); never a role attribute clients choose
#   # machine: {subject: {O: [Example]}}
"""
