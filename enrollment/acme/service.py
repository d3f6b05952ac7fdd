"""The ACME protocol logic (RFC 8555), independent of the HTTP framework.

``AcmeService.handle(ctx)`` is synchronous (it touches the database and the HSM) and is run
in a worker thread by ``enrollment.acme.app``. Every response carries a fresh
``Replay-Nonce`` and ``Link: <directory>;rel="index"`` (§6.5, §7.1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca.csr import parse_csr
from ca.errors import ErrorKind, PKIError
from ca.model import IssuanceRequest, Requester, RevocationReason, RevocationRequest
from ca.ports import CoreServices
from ca.profiles import check_sans
from enrollment.acme import messages as m
from enrollment.acme.challenges import ChallengeRegistry
from enrollment.acme.jws import (
    Jws,
    PublicKey,
    b64d,
    b64e,
    parse_jws,
    public_jwk,
    public_key_from_jwk,
    thumbprint,
    verify_eab_mac,
    verify_signature,
)
from enrollment.acme.model import Account, Authz, Challenge, Identifier, Order
from enrollment.acme.problems import AcmeProblem, from_pki_error, malformed, unauthorized
from enrollment.acme.settings import AcmeSettings
from enrollment.acme.store import AcmeStore, IntegrityError
from enrollment.acme.validation_queue import FairValidationQueue

log = logging.getLogger("ikepki.acme")
JOSE = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
REVOCABLE = {RevocationReason.unspecified, RevocationReason.keyCompromise, RevocationReason.affiliationChanged,
             RevocationReason.superseded, RevocationReason.cessationOfOperation,
             RevocationReason.privilegeWithdrawn}
PROFILE_DESCRIPTIONS = {"machine": "IKEv2 machine identity (ipsecIKE + clientAuth)",
                        "gateway": "IKEv2 gateway (ipsecIKE + serverAuth + clientAuth)",
                        "user": "IKEv2 user identity (ipsecIKE + clientAuth, email names)"}
JWK_ROUTES = ("/new-account", "/revoke-cert")


@dataclass(frozen=True)
class RequestContext:
    method: str
    path: str  # relative to the ACME base, e.g. /new-order
    base: str  # https://host:port/acme
    source: str
    content_type: str = ""
    body: bytes = b""

    @property
    def url(self) -> str:
        return self.base + self.path


@dataclass
class Response:
    status: int
    body: Any = None  # dict -> JSON; bytes as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Signed:
    """A verified POST: the JWS, its payload and who signed it (account, or a bare jwk)."""

    jws: Jws
    payload: dict[str, Any] | None
    account: Account | None
    jwk: dict[str, Any] | None
    key: PublicKey


class RateLimiter:
    """Fixed-window counters per key (in-process; each replica enforces its own share)."""

    def __init__(self, window: int) -> None:
        self.window = max(window, 1)
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))

    def hit(self, key: str, limit: int) -> int | None:
        """Count one request; the seconds to wait when over ``limit`` (0 = unlimited)."""
        if limit <= 0:
            return None
        now = int(time.time())
        slot = now // self.window
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts.clear()
            current, count = self._counts[key]
            count = count + 1 if current == slot else 1
            self._counts[key] = (slot, count)
        return (slot + 1) * self.window - now if count > limit else None


class AcmeService:
    def __init__(self, deployment: CoreServices, settings: AcmeSettings, registry: ChallengeRegistry) -> None:
        self.dep = deployment
        self.settings = settings
        self.registry = registry
        self.store = AcmeStore(deployment.db)
        self.limiter = RateLimiter(settings.rate_limit_window_seconds)
        self.validations = FairValidationQueue(settings.validation_workers, settings.validation_per_account,
                                               settings.validation_queue_per_account, settings.validation_queue_max)
        for name in settings.profiles:
            deployment.authority.profile(name)  # fail closed on unknown profile names

    # -- entry point ----------------------------------------------------------------------------

    def handle(self, ctx: RequestContext) -> Response:
        urls = m.Urls(ctx.base)
        try:
            resp = self._dispatch(ctx, urls)
        except AcmeProblem as problem:
            resp = self._problem(problem)
        except PKIError as exc:
            resp = self._problem(from_pki_error(exc))
        except Exception:
            log.exception("acme: internal error on %s %s", ctx.method, ctx.path)
            resp = self._problem(AcmeProblem("serverInternal", "internal error", 500))
        return self._decorate(resp, urls)

    def too_large(self, ctx: RequestContext) -> Response:
        problem = AcmeProblem("payloadTooLarge", f"request body exceeds {self.settings.max_body_bytes} bytes", 413)
        return self._decorate(self._problem(problem), m.Urls(ctx.base))

    def _decorate(self, resp: Response, urls: m.Urls) -> Response:
        try:
            resp.headers["Replay-Nonce"] = self.store.new_nonce(self.settings.nonce_lifetime_seconds)
        except PKIError:
            resp.headers.setdefault("Retry-After", "5")
        resp.links.append(f'<{urls.directory}>;rel="index"')
        return resp

    def _problem(self, problem: AcmeProblem) -> Response:
        resp = Response(problem.status, problem.document(), "application/problem+json", dict(problem.headers))
        if problem.retry_after is not None:
            resp.headers["Retry-After"] = str(problem.retry_after)
        return resp

    def _dispatch(self, ctx: RequestContext, urls: m.Urls) -> Response:
        path, method = ctx.path, ctx.method
        self._rate_limit(ctx, None)
        if path == "/directory":
            self._method(ctx, "GET", "HEAD")
            return Response(200, self.directory(urls))
        if path == "/new-nonce":
            self._method(ctx, "GET", "HEAD")
            return Response(200 if method == "HEAD" else 204, None, headers={"Cache-Control": "no-store"})
        if path.startswith("/renewal-info/"):
            self._method(ctx, "GET", "HEAD")
            return self.renewal_info(path[len("/renewal-info/"):])
        route = self._route(path)
        if route is None:
            raise AcmeProblem("notFound", f"no ACME resource at {path[:100]}", 404)
        self._method(ctx, "POST")
        signed = self._authenticate(ctx, urls)
        handler, arg = route
        return handler(ctx, urls, signed, arg)  # type: ignore[no-any-return]

    def _method(self, ctx: RequestContext, *allowed: str) -> None:
        if ctx.method not in allowed:
            raise AcmeProblem("methodNotAllowed", f"use {' or '.join(allowed)} here", 405,
                              headers={"Allow": ", ".join(allowed)})

    def _route(self, path: str) -> tuple[Any, str] | None:
        fixed = {"/new-account": self.new_account, "/new-order": self.new_order, "/revoke-cert": self.revoke_cert,
                 "/key-change": self.key_change}
        if path in fixed:
            return fixed[path], ""
        parts = path.strip("/").split("/")
        table = {("acct", 2): self.account, ("acct", 3): self.account_orders, ("order", 2): self.order,
                 ("order", 3): self.finalize, ("authz", 2): self.authz, ("chall", 2): self.challenge,
                 ("cert", 2): self.certificate}
        handler = table.get((parts[0], len(parts)))
        if handler is None or not parts[1] or len(parts[1]) > 64:
            return None
        if len(parts) == 3 and parts[2] != {"acct": "orders", "order": "finalize"}[parts[0]]:
            return None
        return handler, parts[1]

    # -- request authentication (§6.2-6.5) ------------------------------------------------------

    def _authenticate(self, ctx: RequestContext, urls: m.Urls) -> Signed:
        if ctx.content_type.split(";")[0].strip().lower() != JOSE:
            raise AcmeProblem("unsupportedMediaType", f"Content-Type must be {JOSE}", 415)
        jws = parse_jws(ctx.body)
        protected = jws.protected
        if protected.get("url") != ctx.url:
            raise unauthorized("the JWS url header does not match the request URL")
        nonce = protected.get("nonce")
        if not isinstance(nonce, str) or not nonce or len(nonce) > 64:
            raise AcmeProblem("badNonce", "the JWS has no usable nonce")
        has_kid, has_jwk = "kid" in protected, "jwk" in protected
        if has_kid == has_jwk:
            raise malformed("the JWS must carry exactly one of kid and jwk")
        if has_jwk and ctx.path not in JWK_ROUTES:
            raise malformed("this resource requires a kid (account URL), not a jwk")
        if has_kid and ctx.path == "/new-account":
            raise malformed("newAccount must be signed with a jwk")
        account, jwk = None, None
        if has_kid:
            account = self._account_for_kid(protected["kid"], urls)
            key = public_key_from_jwk(account.jwk)
        else:
            jwk = protected["jwk"]
            key = public_key_from_jwk(jwk)
            jwk = public_jwk(jwk)
        verify_signature(jws, key)
        payload = jws.payload()
        if not self.store.redeem_nonce(nonce):
            raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used")
        self._rate_limit(ctx, account)
        return Signed(jws, payload, account, jwk, key)

    def _account_for_kid(self, kid: Any, urls: m.Urls) -> Account:
        prefix = urls.account("")
        if not isinstance(kid, str) or not kid.startswith(prefix) or len(kid) > len(prefix) + 64:
            raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this server")
        account = self.store.account(kid[len(prefix):])
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account")
        if account.status != "valid":
            raise unauthorized(f"account is {account.status}")
        return account

    def _rate_limit(self, ctx: RequestContext, account: Account | None) -> None:
        """Per source address for every request (nonces cost a database write), per account once signed."""
        if account is None:
            wait = self.limiter.hit(f"ip:{ctx.source}", self.settings.rate_limit_per_ip)
        else:
            wait = self.limiter.hit(f"acct:{account.id}", self.settings.rate_limit_per_account)
        if wait is not None:
            raise AcmeProblem("rateLimited", "too many requests; retry later", 429, retry_after=wait)

    # -- directory and accounts (§7.1.1, §7.3) --------------------------------------------------

    def directory(self, urls: m.Urls) -> dict[str, Any]:
        meta: dict[str, Any] = {"termsOfService": self.settings.terms_of_service,
                                "externalAccountRequired": self.settings.external_account_required,
                                "profiles": {p: PROFILE_DESCRIPTIONS.get(p, p) for p in self.settings.profiles}}
        if self.settings.website:
            meta["website"] = self.settings.website
        return {"newNonce": urls.new_nonce, "newAccount": urls.new_account, "newOrder": urls.new_order,
                "revokeCert": urls.revoke_cert, "keyChange": urls.key_change, "renewalInfo": urls.renewal_info,
                "meta": meta}

    def _account_response(self, account: Account, urls: m.Urls, status: int) -> Response:
        return Response(status, m.account_json(account, urls), headers={"Location": urls.account(account.id)})

    def new_account(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        payload = _require_payload(s)
        assert s.jwk is not None
        tp = thumbprint(s.jwk)
        existing = self.store.account_by_thumbprint(tp)
        if existing is not None:
            if existing.status != "valid":
                raise unauthorized(f"account is {existing.status}")
            return self._account_response(existing, urls, 200)
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
        if payload.get("termsOfServiceAgreed") is not True:
            raise AcmeProblem("userActionRequired", "you must agree to the terms of service",
                              instance=self.settings.terms_of_service)
        contact = m.parse_contacts(payload.get("contact"))
        eab_kid = self._check_eab(ctx, payload.get("externalAccountBinding"), s.jwk)
        try:
            account = self.store.create_account(s.jwk, tp, contact, eab_kid, self.dep.clock.now())
        except IntegrityError:
            raced = self.store.account_by_thumbprint(tp)
            if raced is None:
                raise
            return self._account_response(raced, urls, 200)
        if account is None:
            raise unauthorized("the external account key is expired, disabled or already used")
        self.dep.audit.append(self.dep.clock.now(), account.id, "acme-new-account", "acme", source=ctx.source,
                              eab_kid=eab_kid)
        return self._account_response(account, urls, 201)

    def _check_eab(self, ctx: RequestContext, binding: Any, jwk: dict[str, Any]) -> str | None:
        """§7.3.4 External Account Binding: HMAC over the account key by a provisioned key."""
        if binding is None:
            if self.settings.external_account_required:
                raise AcmeProblem("externalAccountRequired", "this server requires external account binding")
            return None
        if not isinstance(binding, dict):
            raise malformed("externalAccountBinding must be a JWS object")
        eab = parse_jws(binding, what="externalAccountBinding")
        if eab.protected.get("url") != ctx.url:
            raise unauthorized("externalAccountBinding url does not match the newAccount URL")
        if "nonce" in eab.protected or "jwk" in eab.protected:
            raise malformed("externalAccountBinding must not carry nonce or jwk")
        kid = eab.protected.get("kid")
        key = self.store.eab_key(kid) if isinstance(kid, str) and 0 < len(kid) <= 64 else None
        if key is None:
            raise unauthorized("unknown external account key id")
        verify_eab_mac(eab, key.hmac_key)
        inner = eab.payload()
        try:
            same = inner is not None and public_jwk(inner) == jwk
        except (KeyError, TypeError):
            same = False
        if not same:
            raise unauthorized("externalAccountBinding payload must be the account key")
        now = self.dep.clock.now()
        if key.disabled or (key.expires is not None and key.expires <= now) or (key.single_use and key.used_count):
            raise unauthorized("the external account key is expired, disabled or already used")
        return key.kid

    def account(self, ctx: RequestContext, urls: m.Urls, s: Signed, account_id: str) -> Response:
        account = self._own_account(s, account_id)
        payload = s.payload or {}
        if "status" in payload:
            if payload["status"] != "deactivated":
                raise malformed("the only status a client may set is deactivated")
            account = self.store.update_account(account.id, status="deactivated")
            self.dep.audit.append(self.dep.clock.now(), account.id, "acme-deactivate-account", "acme",
                                  source=ctx.source)
        if "contact" in payload:
            account = self.store.update_account(account.id, contact=m.parse_contacts(payload["contact"]))
        return self._account_response(account, urls, 200)

    def account_orders(self, ctx: RequestContext, urls: m.Urls, s: Signed, account_id: str) -> Response:
        """§7.1.2.1 orders list (newest 1000, one page)."""
        account = self._own_account(s, account_id)
        orders = self.store.orders_for_account(account.id, 1000, 0)
        return Response(200, {"orders": [urls.order(o.id) for o in orders]})

    def _own_account(self, s: Signed, account_id: str) -> Account:
        if s.account is None or s.account.id != account_id:
            raise unauthorized("requests for an account must be signed by that account")
        return s.account

    def key_change(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        """§7.3.5 key rollover: an inner JWS by the new key, carried by the old key's request."""
        assert s.account is not None
        outer = _require_payload(s)
        inner = parse_jws(outer, what="inner JWS")
        if "kid" in inner.protected or "jwk" not in inner.protected or "nonce" in inner.protected:
            raise malformed("the inner JWS needs a jwk and no kid or nonce")
        if inner.protected.get("url") != ctx.url:
            raise malformed("the inner JWS url must equal the outer url")
        new_key = public_key_from_jwk(inner.protected["jwk"])
        verify_signature(inner, new_key)
        body = inner.payload() or {}
        if body.get("account") != s.jws.protected.get("kid"):
            raise malformed("keyChange account does not match the signing account")
        old = body.get("oldKey")
        try:
            old_ok = isinstance(old, dict) and thumbprint(old) == s.account.thumbprint
        except (KeyError, TypeError):
            old_ok = False
        if not old_ok:
            raise malformed("keyChange oldKey is not the current account key")
        new_jwk = public_jwk(inner.protected["jwk"])
        new_tp = thumbprint(new_jwk)
        other = self.store.account_by_thumbprint(new_tp)
        if other is not None:
            raise AcmeProblem("conflict", "the new key is already in use by an account", 409,
                              headers={"Location": urls.account(other.id)})
        try:
            changed = self.store.change_key(s.account.id, s.account.thumbprint, new_jwk, new_tp)
        except IntegrityError:
            raise AcmeProblem("conflict", "the new key is already in use by an account", 409) from None
        if not changed:
            raise AcmeProblem("conflict", "the account key changed concurrently", 409)
        self.dep.audit.append(self.dep.clock.now(), s.account.id, "acme-key-change", "acme", source=ctx.source)
        account = self.store.account(s.account.id)
        assert account is not None
        return self._account_response(account, urls, 200)

    # -- orders (§7.4) --------------------------------------------------------------------------

    def _policy(self, account: Account) -> tuple[str | None, tuple[str, ...] | None]:
        """What the account's EAB key allows: (profile, identifier patterns); None = unrestricted."""
        if account.eab_kid is None:
            return None, None
        key = self.store.eab_key(account.eab_kid)
        if key is None or key.disabled:
            raise unauthorized("the account's external account key has been withdrawn")
        return key.profile, key.identifiers

    def new_order(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        assert s.account is not None
        payload = _require_payload(s)
        raw = payload.get("identifiers")
        if not isinstance(raw, list) or not raw:
            raise malformed("identifiers must be a non-empty list")
        if len(raw) > self.settings.max_identifiers:
            raise AcmeProblem("rejectedIdentifier", f"at most {self.settings.max_identifiers} identifiers per order")
        identifiers = list(dict.fromkeys(m.parse_identifier(i) for i in raw))
        profile = self._order_profile(s.account, payload.get("profile"))
        self._check_identifiers(s.account, profile, identifiers)
        not_before, not_after = self._validity(payload)
        replaces = self._replaces(s.account, payload.get("replaces"))
        now = self.dep.clock.now()
        types = []
        for ident in identifiers:
            probe = Authz("", "", "", ident, "pending", now)
            offered = self.registry.types_for(probe)
            if not offered:
                raise AcmeProblem("rejectedIdentifier", f"no challenge can validate {ident.value}")
            types.append(offered)
        order = self.store.create_order(
            s.account.id, identifiers, profile, now + timedelta(seconds=self.settings.order_lifetime_seconds),
            now + timedelta(seconds=self.settings.authz_lifetime_seconds), types, now, not_before, not_after,
            replaces)
        return Response(201, m.order_json(order, urls), headers={"Location": urls.order(order.id)})

    def _order_profile(self, account: Account, requested: Any) -> str:
        """draft-aaron-acme-profiles: ``profile`` names one of ``meta.profiles``."""
        bound, _ = self._policy(account)
        if requested is None:
            return bound or self.settings.default_profile
        if not isinstance(requested, str) or requested not in self.settings.profiles:
            raise AcmeProblem("invalidProfile", f"unknown profile {str(requested)[:32]!r}")
        if bound is not None and requested != bound:
            raise AcmeProblem("invalidProfile", f"this account may only use profile {bound!r}")
        return requested

    def _check_identifiers(self, account: Account, profile_name: str, identifiers: list[Identifier]) -> None:
        unsupported = [i for i in identifiers if i.type not in self.registry.identifier_types]
        if unsupported:
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {unsupported[0].type} is not supported")
        _, patterns = self._policy(account)
        subproblems = []
        for ident in identifiers:
            detail = None
            if patterns is not None and not any(m.matches_pattern(ident, p) for p in patterns):
                detail = f"{ident.value} is not allowed for this account"
            else:
                try:
                    check_sans(self.dep.authority.profile(profile_name), [m.general_name(ident)])
                except PKIError as exc:
                    detail = exc.detail
            if detail:
                subproblems.append({"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": detail,
                                    "identifier": ident.wire()})
        if subproblems:
            raise AcmeProblem("rejectedIdentifier", "; ".join(str(p["detail"]) for p in subproblems),
                              subproblems=subproblems)

    def _validity(self, payload: dict[str, Any]) -> tuple[Any, Any]:
        if payload.get("notBefore") is not None:
            raise malformed("notBefore is not supported; certificates start at issuance")
        if payload.get("notAfter") is None:
            return None, None
        not_after = m.parse_rfc3339(payload["notAfter"], "notAfter")
        if not_after <= self.dep.clock.now():
            raise malformed("notAfter must be in the future")
        return None, not_after

    def _replaces(self, account: Account, replaces: Any) -> str | None:
        """RFC 9773 §5: the certificate being replaced must be one of this account's."""
        if replaces is None:
            return None
        info = self._cert_by_ari_id(replaces)
        if info is None or info.requester != account.id:
            raise malformed("replaces does not name a certificate of this account")
        return str(replaces)

    def _load_order(self, s: Signed, order_id: str) -> Order:
        order = self.store.order(order_id)
        if order is None:
            raise AcmeProblem("notFound", "no such order", 404)
        if s.account is None or order.account_id != s.account.id:
            raise unauthorized("this order belongs to another account")
        if order.status in ("pending", "ready") and order.expires <= self.dep.clock.now():
            self.store.transition_order(order.id, order.status, "invalid",
                                        error={"type": "urn:ietf:params:acme:error:malformed",
                                               "detail": "order expired", "status": 400})
            order = self.store.order(order_id) or order
        return order

    def order(self, ctx: RequestContext, urls: m.Urls, s: Signed, order_id: str) -> Response:
        order = self._load_order(s, order_id)
        headers = {"Retry-After": "1"} if order.status == "processing" else {}
        return Response(200, m.order_json(order, urls), headers=headers)

    def finalize(self, ctx: RequestContext, urls: m.Urls, s: Signed, order_id: str) -> Response:
        """§7.4: ready → processing → valid (issued here, synchronously) or invalid."""
        assert s.account is not None
        order = self._load_order(s, order_id)
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"order is {order.status}, not ready")
        payload = _require_payload(s)
        csr = parse_csr(b64d(payload.get("csr"), "csr"))
        self._check_csr(csr, order, s.key)
        self._check_attested_key(order, csr.public_key)
        if not self.store.transition_order(order.id, "ready", "processing"):
            raise AcmeProblem("orderNotReady", "order is no longer ready")
        evidence = self._evidence(order)
        lifetime = order.not_after - self.dep.clock.now() if order.not_after else None
        try:
            issued = self.dep.authority.issue(IssuanceRequest(
                csr=csr, profile=order.profile, requester=Requester("acme", s.account.id, ctx.source),
                lifetime=lifetime, replace_sans=tuple(m.general_name(i) for i in order.identifiers),
                extra_sans=_device_sans(evidence),
                device_id=evidence.get("device_id"), ek_fingerprint=evidence.get("ek_fingerprint")))
        except PKIError as exc:
            problem = from_pki_error(exc)
            if exc.kind is ErrorKind.UNAVAILABLE:  # HSM or database away: the client may finalize again later
                self.store.transition_order(order.id, "processing", "ready")
            else:
                self.store.transition_order(order.id, "processing", "invalid", error=problem.document())
            raise problem from None
        except Exception:
            self.store.transition_order(order.id, "processing", "invalid",
                                        error=AcmeProblem("serverInternal", "issuance failed", 500).document())
            raise
        self.store.transition_order(order.id, "processing", "valid", cert_serial=issued.info.serial_hex)
        done = self.store.order(order.id)
        assert done is not None
        return Response(200, m.order_json(done, urls), headers={"Location": urls.order(order.id)})

    def _check_csr(self, csr: Any, order: Order, account_key: PublicKey) -> None:
        """§7.4: the CSR names exactly the order's identifiers; §11.1: not the account key."""
        names: set[Identifier] = set()
        for san in csr.sans:
            if isinstance(san, x509.DNSName):
                names.add(Identifier("dns", san.value.lower()))
            elif isinstance(san, x509.IPAddress):
                names.add(Identifier("ip", str(san.value)))
            elif isinstance(san, x509.OtherName):
                names.add(m.device_identifier(san))
            else:
                raise AcmeProblem("badCSR", f"CSR contains an unsupported name type {type(san).__name__}")
        wanted = set(order.identifiers)
        for cn in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = str(cn.value).lower()
            if not any(i.value == value for i in wanted):
                raise AcmeProblem("badCSR", "CSR common name is not one of the order's identifiers")
        if names != wanted:
            raise AcmeProblem("badCSR", "CSR identifiers differ from the order's identifiers")
        spki = csr.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if spki == account_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo):
            raise AcmeProblem("badCSR", "the certificate key must differ from the account key")

    def _evidence(self, order: Order) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for authz in self.store.authzs(order.authz_ids):
            out.update(authz.evidence or {})
        return out

    def _check_attested_key(self, order: Order, csr_key: Any) -> None:
        """draft-ietf-acme-device-attest-09 §5: the CSR key is the TPM key every device-attest-01 attested."""
        attested = [a.evidence for a in self.store.authzs(order.authz_ids)
                    if a.evidence and "attested_spki" in a.evidence]
        if not attested:
            return
        from enrollment.attestation.acme_validator import check_csr_key
        from enrollment.attestation.errors import AttestationError

        if len({e.get("ek_fingerprint") for e in attested}) != 1:
            raise AcmeProblem("badCSR", "the order's device identifiers were attested by different TPMs")
        try:
            for evidence in attested:
                check_csr_key(evidence, csr_key)
        except AttestationError as exc:
            raise AcmeProblem("badCSR", f"{exc.reason.value}: {exc.detail}") from None

    # -- authorizations and challenges (§7.5) ---------------------------------------------------

    def _load_authz(self, s: Signed, authz_id: str) -> Authz:
        authz = self.store.authz(authz_id)
        if authz is None:
            raise AcmeProblem("notFound", "no such authorization", 404)
        if s.account is None or authz.account_id != s.account.id:
            raise unauthorized("this authorization belongs to another account")
        if authz.status == "pending" and authz.expires <= self.dep.clock.now():
            self.store.set_authz_status(authz.id, ("pending",), "expired")
            authz = self.store.authz(authz_id) or authz
        return authz

    def stale_after(self) -> timedelta:
        """How long a challenge may stay processing: the longest wait in its account's queue plus
        its own run (each ``validation_timeout``), three times over, plus a minute."""
        rounds = self.settings.validation_queue_per_account // max(1, self.settings.validation_per_account) + 1
        return timedelta(seconds=3 * rounds * self.settings.validation_timeout + 60)

    def _reap_stale(self, authz: Authz, challenges: list[Challenge]) -> bool:
        """A validation still processing long after its timeout was lost (its replica died):
        processing → invalid, so the client learns it and can start a new order."""
        now = self.dep.clock.now()
        limit = self.stale_after()
        reaped = False
        for ch in challenges:
            if ch.status == "processing" and ch.validated is not None and now - ch.validated > limit:
                error = AcmeProblem("serverInternal", "the validation was interrupted; create a new order",
                                    500).document()
                error["identifier"] = authz.identifier.wire()
                self.store.finish_challenge(ch, authz, error, now)
                reaped = True
        return reaped

    def authz(self, ctx: RequestContext, urls: m.Urls, s: Signed, authz_id: str) -> Response:
        authz = self._load_authz(s, authz_id)
        payload = s.payload
        if payload is not None and "status" in payload:
            if payload["status"] != "deactivated":
                raise malformed("the only status a client may set is deactivated")
            if not self.store.set_authz_status(authz.id, ("pending", "valid"), "deactivated"):
                raise unauthorized(f"an authorization that is {authz.status} cannot be deactivated")
            error = {"type": "urn:ietf:params:acme:error:unauthorized", "status": 403,
                     "detail": "an authorization of this order was deactivated"}
            for status in ("pending", "ready"):  # §7.1.6: an order with a deactivated authorization is invalid
                self.store.transition_order(authz.order_id, status, "invalid", error=error)
            authz = self.store.authz(authz_id) or authz
        challenges = self.store.challenges(authz.id)
        if authz.status == "pending" and self._reap_stale(authz, challenges):
            authz = self.store.authz(authz_id) or authz
            challenges = self.store.challenges(authz.id)
        headers = {"Retry-After": "1"} if any(c.status == "processing" for c in challenges) else {}
        return Response(200, m.authz_json(authz, challenges, urls), headers=headers)

    def challenge(self, ctx: RequestContext, urls: m.Urls, s: Signed, challenge_id: str) -> Response:
        """§7.5.1: a POST with a JSON object starts validation; POST-as-GET only reads."""
        challenge = self.store.challenge(challenge_id)
        if challenge is None:
            raise AcmeProblem("notFound", "no such challenge", 404)
        authz = self._load_authz(s, challenge.authz_id)
        assert s.account is not None
        if s.payload is not None and challenge.status == "pending":
            if authz.status != "pending":
                raise malformed(f"the authorization is {authz.status}")
            account, payload, started = s.account, s.payload, challenge
            if not self.validations.has_room(account.id):
                raise AcmeProblem("rateLimited", "too many validations pending for this account; retry later", 429,
                                  retry_after=max(1, int(self.settings.validation_timeout)))
            if self.store.start_challenge(challenge.id, authz.id, self.dep.clock.now()):
                def job() -> None:
                    self._validate(started, authz, account, payload)
                if not self.validations.submit(account.id, job):  # filled up since has_room: fail, recorded
                    error = AcmeProblem("rateLimited", "too many validations pending; create a new order").document()
                    error["identifier"] = authz.identifier.wire()
                    self.store.finish_challenge(started, authz, error, self.dep.clock.now())
            challenge = self.store.challenge(challenge_id) or challenge
        links = [f'<{urls.authz(authz.id)}>;rel="up"']
        headers = {"Retry-After": "1"} if challenge.status == "processing" else {}
        return Response(200, m.challenge_json(challenge, urls), headers=headers, links=links)

    def _validate(self, challenge: Challenge, authz: Authz, account: Account, payload: dict[str, Any]) -> None:
        """Runs in the validation pool; records the outcome (§7.1.6 state machine)."""
        validator = self.registry.get(challenge.type)
        error, evidence = None, None
        try:
            if validator is None:
                raise RuntimeError(f"no validator for {challenge.type}")
            result = validator.validate(challenge, authz, account, payload)
            if result.ok:
                evidence = result.evidence
            else:
                error = AcmeProblem(result.problem_type or "unauthorized", result.detail).document()
        except Exception:
            log.exception("acme: validator %s failed", challenge.type)
            error = AcmeProblem("serverInternal", "validation failed unexpectedly", 500).document()
        if error is not None:
            error["identifier"] = authz.identifier.wire()
        try:
            self.store.finish_challenge(challenge, authz, error, self.dep.clock.now(), evidence)
        except Exception:
            log.exception("acme: cannot record validation of %s", challenge.id)

    # -- certificates (§7.4.2, §7.6) and renewal information (RFC 9773) --------------------------

    def certificate(self, ctx: RequestContext, urls: m.Urls, s: Signed, serial_hex: str) -> Response:
        order = self.store.order_by_serial(serial_hex)
        if order is None:
            raise AcmeProblem("notFound", "no such certificate", 404)
        if s.account is None or order.account_id != s.account.id:
            raise unauthorized("this certificate belongs to another account")
        info = self.dep.store.get(int(serial_hex, 16))
        if info is None:
            raise AcmeProblem("notFound", "no such certificate", 404)
        chain = self.dep.issuers[info.issuer_id].chain_for_leaf()
        body = info.certificate().public_bytes(Encoding.PEM) + b"".join(c.public_bytes(Encoding.PEM) for c in chain)
        return Response(200, body, PEM_CHAIN)

    def revoke_cert(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        payload = _require_payload(s)
        der = b64d(payload.get("certificate"), "certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise malformed("certificate is not a DER X.509 certificate") from None
        reason = self._reason(payload.get("reason", 0))
        info = self.dep.store.get(cert.serial_number)
        if info is None or info.der != der:
            raise AcmeProblem("notFound", "this server did not issue that certificate", 404)
        self._authorize_revocation(s, cert, info)
        if info.status.value == "revoked":
            raise AcmeProblem("alreadyRevoked", "the certificate is already revoked")
        principal = s.account.id if s.account else f"cert-key:{thumbprint(s.jwk or {})}"
        done = self.dep.authority.revoke(RevocationRequest((info.serial,), reason,
                                                           Requester("acme", principal, ctx.source)))
        if not done:
            raise AcmeProblem("alreadyRevoked", "the certificate is already revoked")
        return Response(200, None)

    def _reason(self, raw: Any) -> RevocationReason:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise AcmeProblem("badRevocationReason", "reason must be an RFC 5280 reason code")
        try:
            reason = RevocationReason(raw)
        except ValueError:
            reason = None
        if reason not in REVOCABLE:
            raise AcmeProblem("badRevocationReason", f"reason code {raw} is not accepted")
        return reason  # type: ignore[return-value]

    def _authorize_revocation(self, s: Signed, cert: x509.Certificate, info: Any) -> None:
        """§7.6: the issuing account, an account holding authorizations for every name, or the cert key."""
        if s.account is None:
            spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            if spki != s.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo):
                raise unauthorized("the request is not signed by the certificate's key")
            return
        if info.channel == "acme" and info.requester == s.account.id:
            return
        held = self.store.valid_authz_values(s.account.id, self.dep.clock.now())
        needed = set()
        for text in info.sans:
            kind, _, value = text.partition(":")
            needed.add(({"DNS": "dns", "IP": "ip"}.get(kind, kind), value))
        if not needed or not needed <= held:
            raise unauthorized("this account may not revoke that certificate")

    def _cert_by_ari_id(self, cert_id: Any) -> Any:
        """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER value bytes)."""
        if not isinstance(cert_id, str) or cert_id.count(".") != 1 or len(cert_id) > 200:
            raise malformed("renewalInfo certificate id must be AKI.serial in base64url")
        aki_b64, serial_b64 = cert_id.split(".")
        aki, serial_bytes = b64d(aki_b64, "keyIdentifier"), b64d(serial_b64, "serial")
        if not serial_bytes or serial_bytes[0] & 0x80:
            raise malformed("serial must be a positive DER INTEGER value")
        info = self.dep.store.get(int.from_bytes(serial_bytes, "big"))
        if info is None or self.dep.issuers[info.issuer_id].key_id != aki:
            return None
        return info

    def renewal_info(self, cert_id: str) -> Response:
        info = self._cert_by_ari_id(cert_id)
        if info is None:
            raise AcmeProblem("notFound", "no such certificate", 404)
        now = self.dep.clock.now()
        if info.status.value != "valid":
            start, end = now - timedelta(minutes=1), now + timedelta(minutes=1)
            why = "the certificate is revoked: renew now"
        else:
            lifetime = info.not_after - info.not_before
            start, end = info.not_before + lifetime * 2 / 3, info.not_before + lifetime * 5 / 6
            why = "renew in the final third of the lifetime"
        body = {"suggestedWindow": {"start": m.rfc3339(start), "end": m.rfc3339(end)}}
        log.debug("acme: renewal info %s: %s", cert_id, why)
        return Response(200, body, headers={"Retry-After": str(self.settings.ari_retry_after_seconds)})


def _device_sans(evidence: dict[str, Any]) -> tuple[x509.GeneralName, ...]:
    """The EK-derived identifiers of an attested device (RFC 4043 / RFC 4108 otherNames) for its certificate."""
    names = [Identifier(t, evidence[k]) for t, k in (("permanent-identifier", "device_id"),
                                                      ("hardware-module", "hardware_module"))
             if isinstance(evidence.get(k), str)]
    return tuple(m.general_name(i) for i in names)


def _require_payload(s: Signed) -> dict[str, Any]:
    if s.payload is None:
        raise malformed("this request needs a JSON payload (it is not a POST-as-GET)")
    return s.payload


def ari_cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 certificate identifier of ``cert`` (for clients and tests)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return f"{b64e(aki)}.{b64e(der)}"


__all__ = ["AcmeService", "RequestContext", "Response", "ari_cert_id"]
