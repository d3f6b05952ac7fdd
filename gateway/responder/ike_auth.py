"""IKE_AUTH (RFC 7296 §1.2, §2.15): certificate authentication of the initiator."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.identity import Identity, IdType, identity_matches
from gateway import events as ev
from gateway.certs import CertificateRejected, key_id, validate_path
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import AuthError, sign_auth, signed_octets, verify_auth
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.sa import Address, IkeSa, PeerAuth, SaState
from gateway.policy import Rule
from gateway.responder.base import OUR_HASHES, Refused, ResponderBase


class IkeAuth(ResponderBase):
    # ----------------------------------------------------------------- IKE_AUTH
    async def _ike_auth(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address
                        ) -> None:
        """RFC 7296 §1.2, §2.15; certificates RFC 4945; children RFC 6023 / §1.3."""
        attempt: dict[str, str] = {}
        try:
            auth = await self._authenticate(sa, payloads, attempt)
        except Refused as r:
            sa.state = SaState.FAILED
            self._reply_sk(sa, hdr, peer, [c.Notify(N.AUTHENTICATION_FAILED)])
            self.log.emit(ev.AUTH_FAILED, ike_sa=sa.name, peer=f"{peer[0]}:{peer[1]}", reason=r.reason,
                          peer_id=attempt.get("peer_id"), serial=attempt.get("serial"),
                          issuer=attempt.get("issuer"))
            self._schedule_expiry(sa, 10.0)
            return
        sa.auth, sa.state, sa.established = auth, SaState.ESTABLISHED, self.clock.now()
        self.init_index.pop((sa.spi_i, sa.peer[0]), None)
        sa.mobike = any(isinstance(p, c.Notify) and p.notify_type == N.MOBIKE_SUPPORTED for p in payloads)
        if any(isinstance(p, c.Notify) and p.notify_type == N.INITIAL_CONTACT for p in payloads):
            self._initial_contact(sa)
        out = self._auth_payloads(sa)
        out += self._first_child(sa, payloads)
        if sa.mobike:
            out.append(c.Notify(N.MOBIKE_SUPPORTED))
        self._reply_sk(sa, hdr, peer, out)
        self.log.emit(ev.SA_UP, ike_sa=sa.name, peer=f"{peer[0]}:{peer[1]}", peer_id=str(auth.identity),
                      id_type=auth.identity.id_type.name, auth=auth.scheme,
                      serial=format(auth.serial, "x"), issuer_key_id=auth.issuer_key_id, rule=auth.rule,
                      suite=sa.to_dict()["suite"])
        for child in sa.children.values():
            self._child_event(ev.CHILD_UP, sa, child)

    def _one(self, payloads: tuple[c.Payload, ...], cls: type[c.Payload], what: str) -> c.Payload:
        found = [p for p in payloads
                 if isinstance(p, cls) and (not isinstance(p, c.ID | c.TS) or p.initiator)]
        if not found:
            raise Refused(N.AUTHENTICATION_FAILED, f"missing {what}")
        return found[0]

    async def _authenticate(self, sa: IkeSa, payloads: tuple[c.Payload, ...], attempt: dict[str, str]
                            ) -> PeerAuth:
        """Certificate path, ID binding, AUTH signature, revocation, policy (in that order);
        ``attempt`` collects the claimed identity and certificate for the failure log."""
        idi = self._one(payloads, c.ID, "IDi")
        auth = self._one(payloads, c.Auth, "AUTH")
        assert isinstance(idi, c.ID) and isinstance(auth, c.Auth)
        try:
            identity = Identity(IdType(idi.id_type), idi.data)
        except ValueError as exc:
            raise Refused(N.AUTHENTICATION_FAILED, f"unsupported ID type {idi.id_type}") from exc
        attempt["peer_id"] = str(identity)
        certs = self._peer_certs(payloads)
        attempt.update(serial=format(certs[0].serial_number, "x"), issuer=certs[0].issuer.rfc4514_string())
        try:
            path = validate_path(certs, self.cfg.roots, self.clock.now())
        except CertificateRejected as exc:
            raise Refused(N.AUTHENTICATION_FAILED, exc.reason) from exc
        if not identity_matches(identity, path.leaf):
            raise Refused(N.AUTHENTICATION_FAILED, "identity does not match certificate")
        octets = signed_octets(sa.init_request, sa.nr, sa.suite.prf, sa.keys.sk_pi, idi.body())
        try:
            scheme = verify_auth(path.leaf.public_key(), auth.method, auth.data, octets,  # type: ignore[arg-type]
                                 frozenset(OUR_HASHES))  # RFC 7427 §4: hashes *we* announced
        except AuthError as exc:
            raise Refused(N.AUTHENTICATION_FAILED, f"AUTH: {exc}") from exc
        await self._check_revocation(path.leaf, path.issuer)
        rule = self._rule_for(path.leaf)
        return PeerAuth(identity, path.leaf, path.issuer, key_id(path.issuer), rule.name if rule else None, scheme)

    def _peer_certs(self, payloads: tuple[c.Payload, ...]) -> list[x509.Certificate]:
        out = []
        for p in payloads:
            if isinstance(p, c.Cert) and p.encoding == 4:
                try:
                    out.append(x509.load_der_x509_certificate(p.data))
                except ValueError as exc:
                    raise Refused(N.AUTHENTICATION_FAILED, "unparseable certificate") from exc
        if not out:
            raise Refused(N.AUTHENTICATION_FAILED, "no certificate sent")
        return out

    def _rule_for(self, cert: x509.Certificate) -> Rule | None:
        if self.cfg.policy is None:
            return None
        rule = self.cfg.policy.match(cert)
        if rule is None:
            raise Refused(N.AUTHENTICATION_FAILED, "no policy rule matches")
        return rule

    def _auth_payloads(self, sa: IkeSa) -> list[c.Payload]:
        idr = c.ID(id_type=self.identity.id_type, data=self.identity.data, initiator=False)
        octets = signed_octets(sa.init_response, sa.ni, sa.suite.prf, sa.keys.sk_pr, idr.body())
        sig = sign_auth(self.cfg.key, octets, sa.peer_hashes)
        chain = [x for x in self.cfg.cert_chain if x.issuer != x.subject or x is self.cfg.cert_chain[0]]
        certs: list[c.Payload] = [c.Cert(encoding=4, data=x.public_bytes(Encoding.DER)) for x in chain]
        return [idr, *certs, c.Auth(method=sig.method, data=sig.data)]

    def _initial_contact(self, sa: IkeSa) -> None:
        """RFC 7296 §2.4: drop other IKE SAs of the same authenticated identity."""
        assert sa.auth is not None
        for other in list(self.sas.values()):
            if other is not sa and other.auth and other.auth.identity == sa.auth.identity:
                self._forget(other)
                self.log.emit(ev.SA_DOWN, ike_sa=other.name, reason="initial contact",
                              peer_id=str(other.auth.identity))

