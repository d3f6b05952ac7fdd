"""IKE_AUTH (RFC 7296 §1.2, §2.15): certificate authentication of the initiator."""

from __future__ import annotations

import contextlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.identity import Identity, IdType, identity_matches, parse_identity
from gateway import events as ev
from gateway.certs import CertificateRejected, key_id, validate_path
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import AuthError, sign_auth, signed_octets, verify_auth
from gateway.ikev2.constants import AuthMethod, PayloadType
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.sa import Address, IkeSa, PeerAuth, SaState
from gateway.policy import Rule
from gateway.radius import packet as rp
from gateway.radius.client import NoAnswer
from gateway.responder.base import OUR_HASHES, Refused, ResponderBase
from gateway.responder.eap import (
    EAP_FAILURE,
    EAP_IDENTITY,
    EAP_RESPONSE,
    EAP_SUCCESS,
    MAX_IDENTITY,
    METHODS,
    EapError,
    EapState,
    Phase,
    auth_matches,
    eap_of,
    eap_payload,
    grant_of,
    identity_request,
    msk_auth,
    parse_eap,
)


class IkeAuth(ResponderBase):
    # ----------------------------------------------------------------- IKE_AUTH
    async def _ike_auth(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address
                        ) -> None:
        """RFC 7296 §1.2, §2.15; certificates RFC 4945; children RFC 6023 / §1.3; EAP §2.16 and
        multiple authentication RFC 4739 (each further IKE_AUTH request continues the same SA)."""
        attempt: dict[str, str] = {}
        try:
            if sa.eap is not None:
                await self._eap_step(sa, hdr, payloads, peer, attempt)
                return
            if not any(isinstance(p, c.Auth) for p in payloads):
                self._eap_begin(sa, hdr, payloads, peer, attempt)
                return
            another = _has_notify(payloads, N.ANOTHER_AUTH_FOLLOWS)
            auth = await self._authenticate(sa, payloads, attempt, decide=not another or self.eap_cfg is None)
            if another and self.eap_cfg is not None:  # RFC 4739 §3: certificate round done, EAP follows
                sa.first_auth = auth
                sa.eap = EapState(Phase.WAIT_IDI, payloads)
                self.log.emit(ev.AUTH_ROUND, ike_sa=sa.name, round=1, method="pubkey", peer_id=str(auth.identity),
                              serial=auth.serial_hex)
                self._reply_sk(sa, hdr, peer, self._auth_payloads(sa))
                return
        except Refused as r:
            self._auth_failed(sa, hdr, peer, r, attempt)
            return
        self._establish(sa, hdr, payloads, peer, auth, self._auth_payloads(sa))

    def _auth_failed(self, sa: IkeSa, hdr: c.Header, peer: Address, r: Refused, attempt: dict[str, str],
                     extra: tuple[c.Payload, ...] = ()) -> None:
        sa.state = SaState.FAILED
        self.log.emit(ev.AUTH_FAILED, ike_sa=sa.name, peer=f"{peer[0]}:{peer[1]}", reason=r.reason,
                      peer_id=attempt.get("peer_id"), serial=attempt.get("serial"),
                      issuer=attempt.get("issuer"), **({"eap_identity": attempt["eap_identity"]}
                                                        if "eap_identity" in attempt else {}))
        self._reply_sk(sa, hdr, peer, [*extra, c.Notify(N.AUTHENTICATION_FAILED)])
        self._schedule_expiry(sa, 10.0)

    def _establish(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                   auth: PeerAuth, out: list[c.Payload]) -> None:
        """Authentication complete: SA up, CP (virtual IP), first CHILD_SA, AUTH_LIFETIME."""
        sa.auth, sa.state, sa.established = auth, SaState.ESTABLISHED, self.clock.now()
        self.init_index.pop((sa.spi_i, sa.peer[0]), None)
        sa.mobike = any(isinstance(p, c.Notify) and p.notify_type == N.MOBIKE_SUPPORTED for p in payloads)
        if any(isinstance(p, c.Notify) and p.notify_type == N.INITIAL_CONTACT for p in payloads):
            self._initial_contact(sa)
        out = [*out, *self._config_reply(sa, payloads)]
        out += self._first_child(sa, payloads)
        if sa.mobike:
            out.append(c.Notify(N.MOBIKE_SUPPORTED))
        grant = auth.radius
        if grant is not None and grant.session_timeout:
            sa.auth_lifetime = grant.session_timeout  # RFC 4478: re-authenticate before it ends
            out.append(c.Notify(N.AUTH_LIFETIME, grant.session_timeout.to_bytes(4, "big")))
        self.log.emit(ev.SA_UP, ike_sa=sa.name, peer=f"{peer[0]}:{peer[1]}", peer_id=str(auth.identity),
                      id_type=auth.identity.id_type.name, auth=auth.scheme,
                      serial=auth.serial_hex, issuer_key_id=auth.issuer_key_id, rule=auth.rule,
                      suite=sa.to_dict()["suite"],
                      **({"eap_identity": auth.eap_identity, "eap_method": auth.eap_method,
                          "radius": grant.to_dict() if grant else None, "virtual_ip": sa.virtual_ip,
                          "auth_lifetime": sa.auth_lifetime} if auth.eap_method else {}))
        for child in sa.children.values():
            self._child_event(ev.CHILD_UP, sa, child)
        self._reply_sk(sa, hdr, peer, out)
        if auth.eap_method:
            self._session_started(sa)

    # ----------------------------------------------------------------- EAP (RFC 7296 §2.16)
    def _eap_begin(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                   attempt: dict[str, str]) -> None:
        """No AUTH from the initiator: it wants EAP. We authenticate with our certificate and
        ask for the EAP identity."""
        if self.eap_cfg is None:
            raise Refused(N.AUTHENTICATION_FAILED, "missing AUTH (EAP not configured)")
        idi = self._one(payloads, c.ID, "IDi")
        assert isinstance(idi, c.ID)
        attempt["peer_id"] = _id_text(idi)
        sa.eap = EapState(Phase.EAP, payloads, idi_body=idi.body(), idi=idi)
        self.log.emit(ev.EAP_STARTED, ike_sa=sa.name, round=1, peer_id=attempt["peer_id"])
        self._reply_sk(sa, hdr, peer, [*self._auth_payloads(sa), eap_payload(identity_request(sa.eap.next_id))])

    async def _eap_step(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                        attempt: dict[str, str]) -> None:
        st: EapState = sa.eap
        if sa.first_auth is not None:
            attempt.update(peer_id=str(sa.first_auth.identity), serial=sa.first_auth.serial_hex or "")
        elif st.idi is not None:
            attempt["peer_id"] = _id_text(st.idi)
        try:
            if st.phase == Phase.WAIT_IDI:
                if any(isinstance(p, c.Auth) for p in payloads):
                    raise Refused(N.AUTHENTICATION_FAILED, "the second authentication round must be EAP")
                idi = self._one(payloads, c.ID, "second IDi")
                assert isinstance(idi, c.ID)
                st.phase, st.idi, st.idi_body = Phase.EAP, idi, idi.body()
                self.log.emit(ev.EAP_STARTED, ike_sa=sa.name, round=2, peer_id=_id_text(idi))
                self._reply_sk(sa, hdr, peer, [eap_payload(identity_request(st.next_id))])
            elif st.phase == Phase.EAP:
                await self._eap_relay(sa, hdr, payloads, peer, st)
            else:
                self._eap_finish(sa, hdr, payloads, peer, st)
        except Refused as r:
            if st.identity:
                attempt["eap_identity"] = st.identity
            failure = (eap_payload(st.failure or bytes((EAP_FAILURE, st.next_id & 0xFF, 0, 4))),
                       ) if st.phase == Phase.EAP else ()
            self._auth_failed(sa, hdr, peer, r, attempt, failure)

    async def _eap_relay(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                         st: EapState) -> None:
        """One EAP round trip through RADIUS (RFC 3579 §2.1: State echoed, EAP-Message split)."""
        assert self.eap_cfg is not None
        data = eap_of(payloads)
        if data is None:
            raise Refused(N.AUTHENTICATION_FAILED, "EAP payload expected")
        try:
            code, ident, etype, tdata = parse_eap(data)
        except EapError as exc:
            raise Refused(N.AUTHENTICATION_FAILED, f"EAP: {exc}") from exc
        if code != EAP_RESPONSE:
            raise Refused(N.AUTHENTICATION_FAILED, "EAP Response expected")
        st.rounds += 1
        if st.rounds > 64:
            raise Refused(N.AUTHENTICATION_FAILED, "EAP conversation too long")
        if etype == EAP_IDENTITY and not st.identity:
            if not tdata or len(tdata) > MAX_IDENTITY:
                raise Refused(N.AUTHENTICATION_FAILED, "bad EAP identity")
            st.identity = tdata.decode("utf-8", "replace")
        elif etype not in (EAP_IDENTITY, 3):
            st.method = METHODS.get(etype, str(etype))
        attrs = self._access_attrs(sa, st, data)
        try:
            answer = await self.eap_cfg.client.transact(rp.Code.ACCESS_REQUEST, attrs, pinned=st.server)
        except NoAnswer as exc:
            raise Refused(N.AUTHENTICATION_FAILED, f"RADIUS: {exc}") from exc
        pkt, st.server = answer.packet, answer.server
        self.log.emit(ev.RADIUS_ANSWER, ike_sa=sa.name, server=answer.server.label, code=_code_name(pkt.code),
                      eap_identity=st.identity, eap_method=st.method or None)
        eap = pkt.eap_message()
        if pkt.code == rp.Code.ACCESS_CHALLENGE:
            st.state_attr = pkt.first(rp.Attr.STATE)
            if not eap:
                raise Refused(N.AUTHENTICATION_FAILED, "Access-Challenge without EAP-Message")
            st.next_id = eap[1] if len(eap) > 1 else st.next_id
            self._reply_sk(sa, hdr, peer, [eap_payload(eap)])
            return
        if pkt.code == rp.Code.ACCESS_ACCEPT:
            try:
                st.msk = rp.msk_of(pkt, answer.server.secret, answer.request_auth)
            except rp.MalformedPacket as exc:
                raise Refused(N.AUTHENTICATION_FAILED, f"RADIUS: {exc}") from exc
            st.grant = grant_of(pkt, answer.server.label)
            st.phase = Phase.WAIT_AUTH
            success = eap or bytes((EAP_SUCCESS, ident, 0, 4))
            self.log.emit(ev.EAP_SUCCESS, ike_sa=sa.name, eap_identity=st.identity, eap_method=st.method,
                          msk=st.msk is not None, radius=st.grant.to_dict())
            self._reply_sk(sa, hdr, peer, [eap_payload(success)])
            return
        if len(eap) == 4 and eap[0] == EAP_FAILURE:
            st.failure = eap  # RFC 3579: Access-Reject carries the EAP-Failure; relay it
        reason = b"; ".join(pkt.get(rp.Attr.REPLY_MESSAGE)).decode("utf-8", "replace")[:200]
        raise Refused(N.AUTHENTICATION_FAILED, f"RADIUS Access-Reject from {answer.server.label}"
                      + (f": {reason}" if reason else ""))

    def _access_attrs(self, sa: IkeSa, st: EapState, eap: bytes) -> list[tuple[int, bytes]]:
        """Access-Request attributes as strongSwan's eap-radius sends them (RFC 3579 §3, RFC 2865 §5)."""
        assert self.eap_cfg is not None
        attrs: list[tuple[int, bytes]] = [
            (rp.Attr.USER_NAME, st.identity.encode()[:253]),
            (rp.Attr.SERVICE_TYPE, rp.u32(2)),  # Framed
            (rp.Attr.NAS_PORT_TYPE, rp.u32(5)),  # Virtual
            (rp.Attr.NAS_IDENTIFIER, self.eap_cfg.nas_identifier.encode()[:253]),
            (rp.Attr.CALLING_STATION_ID, f"{sa.peer[0]}[{sa.peer[1]}]".encode()),
            *rp.split_eap(eap)]
        if st.state_attr is not None:
            attrs.append((rp.Attr.STATE, st.state_attr))
        return attrs

    def _eap_finish(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                    st: EapState) -> None:
        """Final IKE_AUTH: the initiator's AUTH keyed with the MSK (or SK_pi), then ours."""
        auth = self._one(payloads, c.Auth, "AUTH after EAP")
        assert isinstance(auth, c.Auth)
        key_i, key_r = (st.msk, st.msk) if st.msk else (sa.keys.sk_pi, sa.keys.sk_pr)
        octets = signed_octets(sa.init_request, sa.nr, sa.suite.prf, sa.keys.sk_pi, st.idi_body)
        want = msk_auth(sa.suite.prf, key_i, octets)
        if auth.method != AuthMethod.SHARED_KEY_MIC or not auth_matches(auth.data, want):
            raise Refused(N.AUTHENTICATION_FAILED, "AUTH after EAP does not verify")
        grant = st.grant
        assert grant is not None
        first = sa.first_auth
        methods = frozenset({"eap", *(["pubkey"] if first else [])})
        rule = None
        if self.cfg.policy is not None:
            rule = self.cfg.policy.match_peer(first.cert if first else None, grant.groups, methods)
            if rule is None:
                raise Refused(N.AUTHENTICATION_FAILED, "no policy rule matches")
        # The outer EAP-Identity is an unauthenticated claim; the name the server authenticated is
        # the User-Name of its Access-Accept (RFC 2865 §5.1). Without one the claim stays a claim.
        name = grant.user_name or st.identity
        identity = _identity_of(name, st.idi)
        peer_auth = PeerAuth(identity, first.cert if first else None, first.issuer if first else None,
                             first.issuer_key_id if first else "", rule.name if rule else None,
                             (f"{first.scheme}+" if first else "") + f"EAP-{st.method.upper()}",
                             name, st.method, grant, identity_verified=grant.user_name is not None)
        sa.virtual_ip = grant.framed_ip
        idr = c.ID(id_type=self.identity.id_type, data=self.identity.data, initiator=False)
        mine = msk_auth(sa.suite.prf, key_r, signed_octets(sa.init_response, sa.ni, sa.suite.prf, sa.keys.sk_pr,
                                                           idr.body()))
        sa.eap = None
        self._establish(sa, hdr, st.first, peer, peer_auth, [c.Auth(method=AuthMethod.SHARED_KEY_MIC, data=mine)])

    def _config_reply(self, sa: IkeSa, payloads: tuple[c.Payload, ...]) -> list[c.Payload]:
        """CP(CFG_REPLY) with INTERNAL_IP4_ADDRESS = Framed-IP-Address when asked (RFC 7296 §3.15)."""
        cp = next((p for p in payloads if isinstance(p, c.Unknown) and p.raw_type == PayloadType.CP), None)
        if cp is None or sa.virtual_ip is None or not cp.data or cp.data[0] != CFG_REQUEST:
            return []
        wants = {int.from_bytes(cp.data[i : i + 2], "big") & 0x7FFF for i in _cp_attr_offsets(cp.data)}
        if INTERNAL_IP4_ADDRESS not in wants:
            return []
        ip = ipaddress.IPv4Address(sa.virtual_ip).packed
        body = bytes((CFG_REPLY, 0, 0, 0)) + INTERNAL_IP4_ADDRESS.to_bytes(2, "big") + b"\x00\x04" + ip
        return [c.Unknown(raw_type=PayloadType.CP, data=body)]

    def _one(self, payloads: tuple[c.Payload, ...], cls: type[c.Payload], what: str) -> c.Payload:
        found = [p for p in payloads
                 if isinstance(p, cls) and (not isinstance(p, c.ID | c.TS) or p.initiator)]
        if not found:
            raise Refused(N.AUTHENTICATION_FAILED, f"missing {what}")
        return found[0]

    async def _authenticate(self, sa: IkeSa, payloads: tuple[c.Payload, ...], attempt: dict[str, str],
                            decide: bool = True) -> PeerAuth:
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
        rule = self._rule_for(path.leaf) if decide else None  # RFC 4739: decided after the EAP round
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
        """RFC 7296 §2.4: drop other IKE SAs of the same authenticated identity (an EAP identity
        the RADIUS server did not confirm is not authenticated: it drops nothing)."""
        assert sa.auth is not None
        if not sa.auth.identity_verified:
            return
        for other in list(self.sas.values()):
            if (other is not sa and other.auth and other.auth.identity_verified
                    and other.auth.identity == sa.auth.identity):
                self._forget(other)
                self.log.emit(ev.SA_DOWN, ike_sa=other.name, reason="initial contact",
                              peer_id=str(other.auth.identity))



CFG_REQUEST, CFG_REPLY, INTERNAL_IP4_ADDRESS = 1, 2, 1  # RFC 7296 §3.15


def _cp_attr_offsets(data: bytes) -> list[int]:
    out: list[int] = []
    pos = 4
    while pos + 4 <= len(data) and len(out) < 64:
        out.append(pos)
        pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return out


def _has_notify(payloads: tuple[c.Payload, ...], ntype: int) -> bool:
    return any(isinstance(p, c.Notify) and p.notify_type == ntype for p in payloads)


def _id_text(idi: c.ID) -> str:
    try:
        return str(Identity(IdType(idi.id_type), idi.data))
    except ValueError:
        return idi.data.decode("utf-8", "replace")[:253]


def _identity_of(eap_identity: str, idi: c.ID | None) -> Identity:
    """The peer's identity after EAP: the EAP identity in its natural ID type."""
    try:
        return parse_identity(eap_identity)
    except ValueError:
        if idi is not None:
            with contextlib.suppress(ValueError):
                return Identity(IdType(idi.id_type), idi.data)
        return Identity(IdType.FQDN, eap_identity.encode())


def _code_name(code: int) -> str:
    try:
        return rp.Code(code).name
    except ValueError:
        return str(code)
