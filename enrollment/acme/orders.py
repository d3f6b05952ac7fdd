"""Orders (RFC 8555 §7.4): newOrder with identifiers, profile (draft-ietf-acme-profiles), validity and
``replaces`` (RFC 9773 §5), and finalize: CSR checks, the attested-key check of device-attest-01
(draft-ietf-acme-device-attest-09 §5), issuance through the Authority."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from ca.csr import parse_csr
from ca.device_identity import attested_key_matches
from ca.errors import ErrorKind, PKIError
from ca.model import IssuanceRequest, PostureMark, Requester
from ca.posture import DevicePosture, device_posture
from ca.profiles import check_sans
from enrollment.acme import messages as m
from enrollment.acme.base import AcmeBase, RequestContext, Response, Signed, require_payload
from enrollment.acme.jws import PublicKey, b64d
from enrollment.acme.model import Account, Authz, Identifier, Order
from enrollment.acme.problems import AcmeProblem, from_pki_error, malformed, unauthorized


class Orders(AcmeBase):
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
        payload = require_payload(s)
        raw = payload.get("identifiers")
        if not isinstance(raw, list) or not raw:
            raise malformed("identifiers must be a non-empty list")
        if len(raw) > self.settings.max_identifiers:
            raise AcmeProblem("rejectedIdentifier", f"at most {self.settings.max_identifiers} identifiers per order")
        identifiers = list(dict.fromkeys(m.parse_identifier(i) for i in raw))
        policy = self._policy(s.account)
        profile = self._order_profile(policy, payload.get("profile"))
        self._check_identifiers(policy, profile, identifiers)
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

    def _order_profile(self, policy: tuple[str | None, tuple[str, ...] | None], requested: Any) -> str:
        """draft-aaron-acme-profiles: ``profile`` names one of ``meta.profiles``."""
        bound, _ = policy
        if requested is None:
            return bound or self.settings.default_profile
        if not isinstance(requested, str) or requested not in self.settings.profiles:
            raise AcmeProblem("invalidProfile", f"unknown profile {str(requested)[:32]!r}")
        if bound is not None and requested != bound:
            raise AcmeProblem("invalidProfile", f"this account may only use profile {bound!r}")
        return requested

    def _check_identifiers(self, policy: tuple[str | None, tuple[str, ...] | None], profile_name: str,
                           identifiers: list[Identifier]) -> None:
        unsupported = [i for i in identifiers if i.type not in self.registry.identifier_types]
        if unsupported:
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {unsupported[0].type} is not supported")
        _, patterns = policy
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
        return self._own_order(s, order)

    def _own_order(self, s: Signed, order: Order) -> Order:
        if s.account is None or order.account_id != s.account.id:
            raise unauthorized("this order belongs to another account")
        if order.status in ("pending", "ready") and order.expires <= self.dep.clock.now():
            self.store.transition_order(order.id, order.status, "invalid",
                                        error={"type": "urn:ietf:params:acme:error:malformed",
                                               "detail": "order expired", "status": 400})
            order = self.store.order(order.id) or order
        return order

    def order(self, ctx: RequestContext, urls: m.Urls, s: Signed, order_id: str) -> Response:
        order = self._load_order(s, order_id)
        headers = {"Retry-After": "1"} if order.status == "processing" else {}
        return Response(200, m.order_json(order, urls), headers=headers)

    def finalize(self, ctx: RequestContext, urls: m.Urls, s: Signed, order_id: str) -> Response:
        """§7.4: ready → processing → valid (issued here, synchronously) or invalid."""
        assert s.account is not None
        found = self.store.order_with_authzs(order_id)
        if found is None:
            raise AcmeProblem("notFound", "no such order", 404)
        order, authzs = self._own_order(s, found[0]), found[1]
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"order is {order.status}, not ready")
        payload = require_payload(s)
        csr = parse_csr(b64d(payload.get("csr"), "csr"))
        self._check_csr(csr, order, s.key)
        self._check_attested_key(authzs, csr.public_key)
        evidence = self._evidence(authzs)
        posture = self._posture_mark(evidence)
        if not self.store.transition_order(order.id, "ready", "processing"):
            raise AcmeProblem("orderNotReady", "order is no longer ready")
        lifetime = order.not_after - self.dep.clock.now() if order.not_after else None
        try:
            issued = self.dep.authority.issue(IssuanceRequest(
                csr=csr, profile=order.profile, requester=Requester("acme", s.account.id, ctx.source),
                lifetime=lifetime, replace_sans=tuple(m.general_name(i) for i in order.identifiers),
                extra_sans=_device_sans(evidence),
                device_id=evidence.get("device_id"), ek_fingerprint=evidence.get("ek_fingerprint"),
                posture=posture[0] if posture else None))
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
        moved = self.store.transition_order(order.id, "processing", "valid", cert_serial=issued.info.serial_hex)
        if posture is not None and (port := self._device_posture()) is not None:
            port.record_issued(posture[1], issued.info.serial_hex)
        done = (replace(order, status="valid", cert_serial=issued.info.serial_hex) if moved  # what the UPDATE wrote
                else self.store.order(order.id) or order)
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

    @staticmethod
    def _evidence(authzs: list[Authz]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for authz in authzs:
            out.update(authz.evidence or {})
        return out

    def _device_posture(self) -> DevicePosture | None:
        """The core's posture port (``ca.posture``), looked up once."""
        if not hasattr(self, "_posture"):
            self._posture = device_posture(self.dep)
        return self._posture

    def _posture_mark(self, evidence: dict[str, Any]) -> tuple[PostureMark, int] | None:
        """Issue 17: a TPM-attested device's certificate carries its posture (None when posture is off);
        a refused or stale posture is ``unauthorized``."""
        device_id = evidence.get("device_id")
        posture = self._device_posture()
        if not device_id or "attested_spki" not in evidence or posture is None:
            return None
        try:
            return posture.issuance_mark(device_id)
        except PKIError as exc:
            raise from_pki_error(exc) from None

    @staticmethod
    def _check_attested_key(authzs: list[Authz], csr_key: Any) -> None:
        """draft-ietf-acme-device-attest-09 §5: the CSR key is the TPM key every device-attest-01 attested."""
        attested = [a.evidence for a in authzs if a.evidence and "attested_spki" in a.evidence]
        if not attested:
            return
        if len({e.get("ek_fingerprint") for e in attested}) != 1:
            raise AcmeProblem("badCSR", "the order's device identifiers were attested by different TPMs")
        if not all(attested_key_matches(e["attested_spki"], csr_key) for e in attested):
            raise AcmeProblem("badCSR", "key-mismatch: CSR public key is not the attested TPM key")


def _device_sans(evidence: dict[str, Any]) -> tuple[x509.GeneralName, ...]:
    """The EK-derived identifiers of an attested device (RFC 4043 / RFC 4108 otherNames) for its certificate."""
    names = [Identifier(t, evidence[k]) for t, k in (("permanent-identifier", "device_id"),
                                                      ("hardware-module", "hardware_module"))
             if isinstance(evidence.get(k), str)]
    return tuple(m.general_name(i) for i in names)
