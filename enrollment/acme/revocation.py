"""Certificates (RFC 8555 §7.4.2), revocation (§7.6: by the account key or the certificate key) and
renewal information (RFC 9773)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca.model import Requester, RevocationReason, RevocationRequest
from enrollment.acme import messages as m
from enrollment.acme.base import PEM_CHAIN, REVOCABLE, AcmeBase, RequestContext, Response, Signed, log, require_payload
from enrollment.acme.jws import b64d, b64e, thumbprint
from enrollment.acme.problems import AcmeProblem, malformed, unauthorized


class Revocation(AcmeBase):
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
        payload = require_payload(s)
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


def ari_cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 certificate identifier of ``cert`` (for clients and tests)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return f"{b64e(aki)}.{b64e(der)}"
