"""The IKEv2 responder: exchanges of RFC 7296 §1.2-§1.5 on top of the codec and crypto.

Responses go to the source address/port of the request (RFC 7296 §2.11, §2.23). Message
IDs use a window of 1 (§2.3): the last response is cached and re-sent for a duplicate
request; anything else out of order is dropped. Unauthenticated garbage never gets an
answer except where §2.21.1 asks for one (errors to a parseable IKE_SA_INIT).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.identity import Identity, IdType, identities_of, identity_matches
from gateway import events as ev
from gateway.certs import CertificateRejected, key_id, spki_sha1, validate_path
from gateway.clock import Clock, SystemClock
from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import AuthError, PrivateKey, sign_auth, signed_octets, verify_auth
from gateway.ikev2.constants import HEADER_LEN, Exchange, HashAlg, PayloadType, Protocol
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.crypto import (
    DhPrivate,
    KeyExchangeError,
    derive_keys,
    open_sk,
    seal,
    seal_fragments,
    skeyseed_initial,
    skeyseed_rekey,
)
from gateway.ikev2.proposals import Preferences, select_esp, select_ike
from gateway.ikev2.sa import Address, ChildSa, IkeSa, PeerAuth, SaState
from gateway.policy import Policy, Rule, narrow
from gateway.revocation import Blocklist, OcspChecker, OcspMode, Revoked

OUR_HASHES = (HashAlg.SHA2_256, HashAlg.SHA2_384, HashAlg.SHA2_512, HashAlg.IDENTITY)
COOKIE_VERSION = b"\x01"
RETRANSMIT = (0.5, 1.0, 2.0, 4.0)

Sender = Callable[[bytes, Address, int], None]


@dataclass(frozen=True)
class ResponderConfig:
    """Static configuration of one responder instance."""

    cert_chain: tuple[x509.Certificate, ...]
    key: PrivateKey
    roots: tuple[x509.Certificate, ...]
    policy: Policy | None = None
    ocsp_mode: OcspMode = OcspMode.RELAXED
    prefs: Preferences = field(default_factory=Preferences)
    local_id: Identity | None = None
    listen_host: str = "0.0.0.0"
    half_open_timeout: float = 30.0
    cookie_threshold: int = 64
    fragment_size: int = 1280  # largest SK message sent whole once RFC 7383 is negotiated


class Refused(Exception):
    """Stop the exchange and answer with a single error notify (RFC 7296 §2.21)."""

    def __init__(self, notify: int, reason: str, data: bytes = b"") -> None:
        super().__init__(reason)
        self.notify, self.reason, self.data = notify, reason, data


def _own_identity(cert: x509.Certificate) -> Identity:
    ids = identities_of(cert)
    return next((i for i in ids if i.id_type == IdType.FQDN), next(
        (i for i in ids if i.id_type != IdType.DER_ASN1_DN), ids[0]))


def _natd(spi_i: bytes, spi_r: bytes, addr: Address) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port) (RFC 7296 §2.23)."""
    ip = ipaddress.ip_address(addr[0]).packed
    return hashlib.sha1(spi_i + spi_r + ip + addr[1].to_bytes(2, "big"), usedforsecurity=False).digest()


def _unsupported(exc: c.UnsupportedCritical) -> c.Notify:
    """UNSUPPORTED_CRITICAL_PAYLOAD carries the one-octet payload type (RFC 7296 §3.10.1)."""
    return c.Notify(N.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([exc.payload_type]))


class Responder:
    """All IKE SAs of one gateway; feed datagrams to :meth:`receive`."""

    def __init__(self, cfg: ResponderConfig, send: Sender, log: EventLog | None = None,
                 clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.send = send
        self.clock = clock or SystemClock()
        self.log = log or EventLog(clock=self.clock)
        self.blocklist = Blocklist()
        self.ocsp = OcspChecker(cfg.ocsp_mode, self.clock)
        self.sas: dict[bytes, IkeSa] = {}
        self.init_index: dict[tuple[bytes, str], IkeSa] = {}
        self._cookie_secret = os.urandom(32)
        self.identity = cfg.local_id or _own_identity(cfg.cert_chain[0])
        self._certreq = b"".join(spki_sha1(r) for r in cfg.roots)
        self._tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- plumbing
    def half_open(self) -> int:
        return sum(1 for sa in self.sas.values() if sa.state == SaState.HALF_OPEN)

    def established(self) -> list[IkeSa]:
        return [sa for sa in self.sas.values() if sa.state == SaState.ESTABLISHED]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, sa: IkeSa) -> None:
        self.sas.pop(sa.spi_r, None)
        self.init_index.pop((sa.spi_i, sa.peer[0]), None)
        for fut in sa.pending.values():
            if not fut.done():
                fut.cancel()

    def _schedule_expiry(self, sa: IkeSa, delay: float) -> None:
        def expire() -> None:
            if sa.state in (SaState.HALF_OPEN, SaState.FAILED, SaState.REKEYED):
                self._forget(sa)
        asyncio.get_running_loop().call_later(delay, expire)

    def _reply_plain(self, req: c.Header, peer: Address, port: int, payloads: list[c.Payload],
                     spi_r: bytes = bytes(8)) -> bytes:
        hdr = c.Header(req.spi_i, spi_r, 0, req.exchange, 0x20, req.message_id)
        data = c.encode_message(hdr, payloads)
        self.send(data, peer, port)
        return data

    def _reply_sk(self, sa: IkeSa, req: c.Header, peer: Address, payloads: list[c.Payload]) -> None:
        """Answer inside SK, in RFC 7383 fragments if negotiated and too large; cache for §2.1."""
        hdr = c.Header(sa.spi_i, sa.spi_r, 0, req.exchange, 0x20, req.message_id)
        datagrams = [seal(sa.suite, sa.keys.sk_er, hdr, payloads)]
        if sa.fragmentation and len(datagrams[0]) > self.cfg.fragment_size:
            datagrams = seal_fragments(sa.suite, sa.keys.sk_er, hdr, payloads, self.cfg.fragment_size)
        sa.cached_response = (req.message_id, datagrams)
        sa.expected_id = req.message_id + 1
        for data in datagrams:
            self.send(data, peer, sa.local_port)

    # ----------------------------------------------------------------- entry
    async def receive(self, data: bytes, peer: Address, port: int) -> None:
        """Handle one datagram (marker already stripped)."""
        try:
            hdr = c.Header.decode(data)
        except c.MalformedMessage:
            return
        if hdr.version >> 4 != 2 or hdr.length != len(data) or len(data) > c.MAX_MESSAGE:
            return
        if hdr.exchange == Exchange.IKE_SA_INIT and not hdr.is_response and hdr.spi_r == bytes(8):
            if hdr.message_id == 0 and hdr.from_initiator:
                self._ike_sa_init(data, hdr, peer, port)
            return
        sa = self.sas.get(hdr.spi_r)
        if sa is None or sa.spi_i != hdr.spi_i:
            return
        if hdr.is_response:
            self._response(sa, data, hdr)
        else:
            await self._request(sa, data, hdr, peer, port)

    def _response(self, sa: IkeSa, data: bytes, hdr: c.Header) -> None:
        fut = sa.pending.get(hdr.message_id)
        if fut is None or fut.done() or self._decrypt(sa, data) is None:
            return
        fut.set_result(data)

    def _decrypt(self, sa: IkeSa, data: bytes) -> tuple[int, bytes] | None:
        """Authenticate and open SK (RFC 7296 §3.14) or collect an SKF (RFC 7383 §2.6);
        None means drop silently (§2.21.2) or wait for more fragments."""
        try:
            msg = c.parse_message(data)
            if len(msg.payloads) != 1:
                return None
            sk = msg.payloads[0]
            # the peer is always the original initiator, so it always sends under SK_ei
            if isinstance(sk, c.Encrypted):
                return sk.first_inner, open_sk(sa.suite, sa.keys.sk_ei, data, HEADER_LEN)
            if isinstance(sk, c.EncryptedFragment) and sa.fragmentation:
                return self._reassemble(sa, sk, open_sk(sa.suite, sa.keys.sk_ei, data, HEADER_LEN, True))
            return None
        except c.MalformedMessage:
            return None

    @staticmethod
    def _reassemble(sa: IkeSa, frag: c.EncryptedFragment, plain: bytes) -> tuple[int, bytes] | None:
        """RFC 7383 §2.6.2: keep authenticated fragments of the current request; a larger Total
        restarts reassembly, a smaller one is ignored."""
        have = next(iter(sa.reassembly.values()), None)
        if have is not None and frag.total != sa.reassembly_total:
            if frag.total < sa.reassembly_total:
                return None
            sa.reassembly.clear()
        sa.reassembly_total = frag.total
        sa.reassembly[frag.number] = (frag.first_inner, plain)
        if len(sa.reassembly) < frag.total:
            return None
        parts = [sa.reassembly[n] for n in range(1, frag.total + 1)]
        sa.reassembly.clear()
        return parts[0][0], b"".join(p for _, p in parts)

    async def _request(self, sa: IkeSa, data: bytes, hdr: c.Header, peer: Address, port: int) -> None:
        if sa.cached_response and hdr.message_id == sa.cached_response[0]:
            if hdr.next_payload != PayloadType.SKF or data[HEADER_LEN + 4 : HEADER_LEN + 6] == b"\x00\x01":
                for out in sa.cached_response[1]:  # §2.1; RFC 7383 §2.6.1: on fragment #1 only
                    self.send(out, peer, port)
            return
        if hdr.message_id != sa.expected_id or sa.busy or sa.state == SaState.FAILED:
            return
        opened = self._decrypt(sa, data)
        if opened is None:
            return
        try:
            payloads = c.parse_chain(*opened)
        except c.UnsupportedCritical as exc:
            self._reply_sk(sa, hdr, peer, [_unsupported(exc)])
            return
        except c.MalformedMessage:
            self._reply_sk(sa, hdr, peer, [c.Notify(N.INVALID_SYNTAX)])  # authenticated, so answer (§2.21.2)
            if sa.state == SaState.HALF_OPEN:
                sa.state = SaState.FAILED
                self._schedule_expiry(sa, 10.0)
            return
        self._follow_peer(sa, hdr, peer, port)
        sa.busy = True
        try:
            await self._dispatch(sa, hdr, payloads, peer, port)
        finally:
            sa.busy = False

    @staticmethod
    def _follow_peer(sa: IkeSa, hdr: c.Header, peer: Address, port: int) -> None:
        """Port float at IKE_AUTH, and NAT mapping changes when the peer is behind a NAT: our own
        requests go to the source of the latest authenticated request (RFC 7296 §2.23)."""
        if hdr.exchange == Exchange.IKE_AUTH or (sa.peer_behind_nat and not sa.mobike):
            sa.peer, sa.local_port = peer, port

    async def _dispatch(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                        port: int) -> None:
        if sa.state == SaState.HALF_OPEN:
            if hdr.exchange == Exchange.IKE_AUTH:
                await self._ike_auth(sa, hdr, payloads, peer)
            return
        if hdr.exchange == Exchange.INFORMATIONAL:
            self._informational(sa, hdr, payloads, peer, port)
        elif hdr.exchange == Exchange.CREATE_CHILD_SA and sa.state == SaState.ESTABLISHED:
            await self._create_child_sa(sa, hdr, payloads, peer)
        else:
            self._reply_sk(sa, hdr, peer, [c.Notify(N.INVALID_SYNTAX)])

    # ----------------------------------------------------------------- IKE_SA_INIT
    def _cookie(self, spi_i: bytes, ni: bytes, peer: Address) -> bytes:
        """Cookie = VersionID | Hash(Ni | IPi | SPIi | secret) (RFC 7296 §2.6)."""
        ip = ipaddress.ip_address(peer[0]).packed
        return COOKIE_VERSION + hmac.new(self._cookie_secret, ni + ip + spi_i, "sha256").digest()

    def _ike_sa_init(self, data: bytes, hdr: c.Header, peer: Address, port: int) -> None:
        """RFC 7296 §1.2 / §2.6 / §1.3 (INVALID_KE) / §2.23 (NAT-D)."""
        known = self.init_index.get((hdr.spi_i, peer[0]))
        if known is not None:
            if known.init_request == data:
                self.send(known.init_response, peer, port)
            return
        try:
            msg = c.parse_message(data)
        except c.UnsupportedCritical as exc:
            self._reply_plain(hdr, peer, port, [_unsupported(exc)])
            return
        except c.MalformedMessage:
            return
        try:
            self._init_exchange(msg, peer, port)
        except Refused as r:
            if r.notify == N.NO_PROPOSAL_CHOSEN:
                self.log.emit(ev.PROPOSAL_REFUSED, peer=f"{peer[0]}:{peer[1]}", reason=r.reason)
            self._reply_plain(hdr, peer, port, [c.Notify(r.notify, r.data)])

    def _init_payloads(self, msg: c.Message) -> tuple[c.SA, c.KE, c.Nonce]:
        sa_p, ke_p, nonce_p = msg.find(c.SA), msg.find(c.KE), msg.find(c.Nonce)
        if len(sa_p) != 1 or len(ke_p) != 1 or len(nonce_p) != 1:
            raise Refused(N.INVALID_SYNTAX, "IKE_SA_INIT needs one SA, KE and Nonce")
        assert isinstance(sa_p[0], c.SA) and isinstance(ke_p[0], c.KE) and isinstance(nonce_p[0], c.Nonce)
        return sa_p[0], ke_p[0], nonce_p[0]

    def _check_cookie(self, msg: c.Message, ni: bytes, peer: Address) -> None:
        if self.half_open() < self.cfg.cookie_threshold:
            return
        want = self._cookie(msg.header.spi_i, ni, peer)
        got = msg.notify(N.COOKIE)
        if got is None or not hmac.compare_digest(got.data, want):
            raise Refused(N.COOKIE, "cookie required", want)

    def _init_exchange(self, msg: c.Message, peer: Address, port: int) -> None:
        sa_p, ke_p, nonce_p = self._init_payloads(msg)
        self._check_cookie(msg, nonce_p.data, peer)
        choice = select_ike(sa_p.proposals, self.cfg.prefs, ke_p.group)
        if choice.want_group is not None:
            raise Refused(N.INVALID_KE_PAYLOAD, "other DH group wanted", choice.want_group.to_bytes(2, "big"))
        if choice.suite is None or choice.proposal is None:
            raise Refused(N.NO_PROPOSAL_CHOSEN, "no acceptable IKE proposal")
        dh = DhPrivate.generate(choice.suite.dh)
        try:
            shared = dh.shared(ke_p.data)
        except KeyExchangeError as exc:
            raise Refused(N.INVALID_SYNTAX, "bad KE data") from exc
        hdr = msg.header
        spi_r, nr = os.urandom(8), os.urandom(32)
        keys = derive_keys(choice.suite, skeyseed_initial(choice.suite, nonce_p.data, nr, shared),
                           nonce_p.data, nr, hdr.spi_i, spi_r)
        payloads: list[c.Payload] = [c.SA(proposals=(choice.proposal,)),
                                     c.KE(group=choice.suite.dh, data=dh.public()), c.Nonce(data=nr)]
        if msg.notify(N.NAT_DETECTION_SOURCE_IP):
            me = (self._local_ip(peer), port)
            payloads += [c.Notify(N.NAT_DETECTION_SOURCE_IP, _natd(hdr.spi_i, spi_r, me)),
                         c.Notify(N.NAT_DETECTION_DESTINATION_IP, _natd(hdr.spi_i, spi_r, peer))]
        hashes = b"".join(h.to_bytes(2, "big") for h in OUR_HASHES)
        fragmentation = msg.notify(N.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        payloads += [c.CertReq(encoding=4, data=self._certreq), c.Notify(N.SIGNATURE_HASH_ALGORITHMS, hashes),
                     c.Notify(N.CHILDLESS_IKEV2_SUPPORTED)]
        if fragmentation:
            payloads.append(c.Notify(N.IKEV2_FRAGMENTATION_SUPPORTED))
        resp = self._reply_plain(hdr, peer, port, payloads, spi_r)
        natd_s = msg.notify(N.NAT_DETECTION_SOURCE_IP)
        behind_nat = natd_s is not None and natd_s.data != _natd(hdr.spi_i, bytes(8), peer)
        sa = IkeSa(hdr.spi_i, spi_r, choice.suite, keys, nonce_p.data, nr, msg.raw, resp, peer, port,
                   self._peer_hashes(msg), self.clock.now(), fragmentation=fragmentation,
                   peer_behind_nat=behind_nat)
        self.sas[spi_r] = sa
        self.init_index[(hdr.spi_i, peer[0])] = sa
        self._schedule_expiry(sa, self.cfg.half_open_timeout)

    def _local_ip(self, peer: Address) -> str:
        """Our source address toward ``peer``: the bound address, or the kernel's route choice
        for a wildcard socket (what NAT_DETECTION_SOURCE_IP must hash, RFC 7296 §2.23)."""
        host = self.cfg.listen_host
        if host not in ("0.0.0.0", "::", ""):
            return host
        family = socket.AF_INET6 if ipaddress.ip_address(peer[0]).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(peer)
            return str(probe.getsockname()[0])

    @staticmethod
    def _peer_hashes(msg: c.Message) -> frozenset[int]:
        """RFC 7427 §4: the hash algorithms the peer supports."""
        n = msg.notify(N.SIGNATURE_HASH_ALGORITHMS)
        if n is None:
            return frozenset()
        return frozenset(int.from_bytes(n.data[i : i + 2], "big") for i in range(0, len(n.data) - 1, 2))

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

    async def _check_revocation(self, leaf: x509.Certificate, issuer: x509.Certificate) -> None:
        """Pushed block list first, then OCSP (see :mod:`gateway.revocation`)."""
        if self.blocklist.blocks(key_id(issuer), leaf.serial_number):
            raise Refused(N.AUTHENTICATION_FAILED, "certificate revoked (pushed)")
        try:
            await self.ocsp.check(leaf, issuer)
        except Revoked as exc:
            raise Refused(N.AUTHENTICATION_FAILED, str(exc)) from exc

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

    # ----------------------------------------------------------------- CHILD SAs
    def _child_event(self, event: str, sa: IkeSa, child: ChildSa, **extra: object) -> None:
        self.log.emit(event, ike_sa=sa.name, spi_in=child.spi_in.hex(), spi_out=child.spi_out.hex(),
                      local_ts=list(child.local_ts), remote_ts=list(child.remote_ts),
                      peer_id=str(sa.auth.identity) if sa.auth else None, **extra)

    def _negotiate_child(self, sa: IkeSa, payloads: tuple[c.Payload, ...], with_dh: bool
                         ) -> tuple[ChildSa, list[c.Payload], int]:
        """Select ESP and narrow TS (RFC 7296 §2.9, §3.3); raise Refused with the child notify."""
        sa_p = next(p for p in payloads if isinstance(p, c.SA))
        tsi = next((p for p in payloads if isinstance(p, c.TS) and p.initiator), None)
        tsr = next((p for p in payloads if isinstance(p, c.TS) and not p.initiator), None)
        rule = self._current_rule(sa)
        if tsi is None or tsr is None or rule is None:
            raise Refused(N.TS_UNACCEPTABLE, "no CHILD_SA granted by policy")
        choice = select_esp(sa_p.proposals, self.cfg.prefs, with_dh)
        if choice is None:
            raise Refused(N.NO_PROPOSAL_CHOSEN, "no acceptable ESP proposal")
        remote, local = narrow(tsi.selectors, rule.remote_ts), narrow(tsr.selectors, rule.local_ts)
        if not remote or not local:
            raise Refused(N.TS_UNACCEPTABLE, "traffic selectors outside policy")
        spi_in = os.urandom(4)
        child = ChildSa(spi_in, choice.peer_spi, choice.proposal, tuple(map(str, local)),
                        tuple(map(str, remote)), self.clock.now())
        prop = c.Proposal(choice.proposal.num, Protocol.ESP, spi_in, choice.proposal.transforms)
        out: list[c.Payload] = [c.SA(proposals=(prop,)),
                                c.TS(selectors=tuple(s.to_wire() for s in remote), initiator=True),
                                c.TS(selectors=tuple(s.to_wire() for s in local), initiator=False)]
        return child, out, choice.dh

    def _current_rule(self, sa: IkeSa) -> Rule | None:
        if self.cfg.policy is None or sa.auth is None or sa.auth.rule is None:
            return None
        return next((r for r in self.cfg.policy.rules if r.name == sa.auth.rule), None)

    def _first_child(self, sa: IkeSa, payloads: tuple[c.Payload, ...]) -> list[c.Payload]:
        """CHILD_SA piggybacked on IKE_AUTH, or none (childless, RFC 6023 §3)."""
        if not any(isinstance(p, c.SA) for p in payloads):
            return []
        try:
            child, out, _ = self._negotiate_child(sa, payloads, with_dh=False)
        except Refused as r:
            self.log.emit("child_sa_refused", ike_sa=sa.name, reason=r.reason)
            return [c.Notify(r.notify)]
        sa.children[child.spi_in] = child
        return out

    # ----------------------------------------------------------------- CREATE_CHILD_SA
    async def _create_child_sa(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...],
                               peer: Address) -> None:
        """RFC 7296 §1.3: new child, child rekey (§1.3.3) or IKE rekey (§1.3.2)."""
        sa_p = next((p for p in payloads if isinstance(p, c.SA)), None)
        nonce = next((p for p in payloads if isinstance(p, c.Nonce)), None)
        try:
            if sa_p is None or nonce is None:
                raise Refused(N.INVALID_SYNTAX, "CREATE_CHILD_SA needs SA and Nonce")
            if sa_p.proposals[0].protocol == Protocol.IKE:
                await self._rekey_ike(sa, hdr, payloads, sa_p, nonce, peer)
            else:
                self._child_exchange(sa, hdr, payloads, nonce, peer)
        except Refused as r:
            self._reply_sk(sa, hdr, peer, [c.Notify(r.notify, r.data)])
            if r.reason.startswith("revoked"):
                self._spawn(self.delete_ike_sa(sa, r.reason))

    def _child_ke(self, payloads: tuple[c.Payload, ...], group: int) -> list[c.Payload]:
        """PFS KE for a CREATE_CHILD_SA (RFC 7296 §1.3.1); keys are not derived: nothing is installed."""
        if not group:
            return []
        ke = next((p for p in payloads if isinstance(p, c.KE)), None)
        if ke is None or ke.group != group:
            raise Refused(N.INVALID_KE_PAYLOAD, "KE group mismatch", group.to_bytes(2, "big"))
        dh = DhPrivate.generate(group)
        try:
            dh.shared(ke.data)
        except KeyExchangeError as exc:
            raise Refused(N.INVALID_SYNTAX, "bad KE data") from exc
        return [c.KE(group=group, data=dh.public())]

    def _child_exchange(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], nonce: c.Nonce,
                        peer: Address) -> None:
        rekey = next((p for p in payloads if isinstance(p, c.Notify) and p.notify_type == N.REKEY_SA), None)
        old = None
        if rekey is not None:
            old = next((ch for ch in sa.children.values() if rekey.spi in (ch.spi_out, ch.spi_in)), None)
            if old is None:
                raise Refused(N.CHILD_SA_NOT_FOUND, "rekey of unknown CHILD_SA")
        child, out, group = self._negotiate_child(sa, payloads, with_dh=True)
        ke = self._child_ke(payloads, group)
        sa.children[child.spi_in] = child
        self._reply_sk(sa, hdr, peer, [out[0], c.Nonce(data=os.urandom(32)), *ke, *out[1:]])
        self._child_event(ev.CHILD_REKEY if old else ev.CHILD_UP, sa, child,
                          **({"old_spi_in": old.spi_in.hex()} if old else {}))

    async def _rekey_ike(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], sa_p: c.SA,
                         nonce: c.Nonce, peer: Address) -> None:
        """IKE SA rekey (RFC 7296 §1.3.2, keys §2.18); revocation is checked again first."""
        assert sa.auth is not None
        try:
            await self._check_revocation(sa.auth.cert, sa.auth.issuer)
        except Refused as r:
            raise Refused(N.NO_PROPOSAL_CHOSEN, f"revoked at IKE rekey: {r.reason}") from r
        ke = next((p for p in payloads if isinstance(p, c.KE)), None)
        choice = select_ike(sa_p.proposals, self.cfg.prefs, ke.group if ke else -1)
        if choice.want_group is not None:
            raise Refused(N.INVALID_KE_PAYLOAD, "other DH group wanted", choice.want_group.to_bytes(2, "big"))
        if choice.suite is None or choice.proposal is None or ke is None:
            raise Refused(N.NO_PROPOSAL_CHOSEN, "no acceptable IKE proposal for rekey")
        spi_i = next(p.spi for p in sa_p.proposals if p.num == choice.proposal.num)
        if len(spi_i) != 8:
            raise Refused(N.INVALID_SYNTAX, "rekey SPI must be 8 bytes")
        dh = DhPrivate.generate(choice.suite.dh)
        try:
            shared = dh.shared(ke.data)
        except KeyExchangeError as exc:
            raise Refused(N.INVALID_SYNTAX, "bad KE data") from exc
        spi_r, nr = os.urandom(8), os.urandom(32)
        seed = skeyseed_rekey(choice.suite, sa.suite.prf, sa.keys.sk_d, shared, nonce.data, nr)
        keys = derive_keys(choice.suite, seed, nonce.data, nr, spi_i, spi_r)
        prop = c.Proposal(choice.proposal.num, Protocol.IKE, spi_r, choice.proposal.transforms)
        self._reply_sk(sa, hdr, peer, [c.SA(proposals=(prop,)), c.Nonce(data=nr),
                                       c.KE(group=choice.suite.dh, data=dh.public())])
        new = IkeSa(spi_i, spi_r, choice.suite, keys, nonce.data, nr, b"", b"", sa.peer, sa.local_port,
                    sa.peer_hashes, self.clock.now(), SaState.ESTABLISHED, expected_id=0, auth=sa.auth,
                    children=dict(sa.children), mobike=sa.mobike, established=self.clock.now(),
                    fragmentation=sa.fragmentation, peer_behind_nat=sa.peer_behind_nat)
        self.sas[spi_r] = new
        sa.state, sa.children = SaState.REKEYED, {}
        self._schedule_expiry(sa, 30.0)
        self.log.emit(ev.REKEY, ike_sa=sa.name, new_ike_sa=new.name, peer_id=str(sa.auth.identity),
                      serial=format(sa.auth.serial, "x"))

    # ----------------------------------------------------------------- INFORMATIONAL
    def _informational(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                       port: int) -> None:
        """RFC 7296 §1.4 (Delete, DPD), RFC 4555 §3.5 (UPDATE_SA_ADDRESSES)."""
        out: list[c.Payload] = []
        delete_ike = False
        for p in payloads:
            if isinstance(p, c.Delete) and p.protocol == Protocol.IKE:
                delete_ike = True
            elif isinstance(p, c.Delete) and p.protocol in (Protocol.ESP, Protocol.AH):
                out += self._delete_children(sa, p)
            elif isinstance(p, c.Notify) and p.notify_type == N.UPDATE_SA_ADDRESSES and sa.mobike:
                sa.peer, sa.local_port = peer, port
                self.log.emit("ike_sa_address_update", ike_sa=sa.name, peer=f"{peer[0]}:{peer[1]}")
        if delete_ike:
            out = []
        self._reply_sk(sa, hdr, peer, out)
        if delete_ike:
            self._forget(sa)
            if sa.state != SaState.REKEYED:
                self._sa_down(sa, "deleted by peer")

    def _sa_down(self, sa: IkeSa, reason: str) -> None:
        sa.state = SaState.DELETING
        self.log.emit(ev.SA_DOWN, ike_sa=sa.name, reason=reason,
                      peer_id=str(sa.auth.identity) if sa.auth else None,
                      serial=format(sa.auth.serial, "x") if sa.auth else None)

    def _delete_children(self, sa: IkeSa, d: c.Delete) -> list[c.Payload]:
        """Delete CHILD_SAs by the peer's inbound SPIs; answer with ours (RFC 7296 §1.4.1)."""
        ours = []
        for spi in d.spis:
            child = next((ch for ch in sa.children.values() if ch.spi_out == spi), None)
            if child is not None:
                del sa.children[child.spi_in]
                ours.append(child.spi_in)
                self._child_event(ev.CHILD_DOWN, sa, child)
        return [c.Delete(protocol=d.protocol, spi_size=4, spis=tuple(ours))] if ours else []

    # ----------------------------------------------------------------- our requests
    async def _request_peer(self, sa: IkeSa, payloads: list[c.Payload]) -> bool:
        """Send an INFORMATIONAL request with our message ID; retransmit (RFC 7296 §2.1)."""
        msg_id = sa.my_next_id
        sa.my_next_id += 1
        hdr = c.Header(sa.spi_i, sa.spi_r, 0, Exchange.INFORMATIONAL, 0, msg_id)
        data = seal(sa.suite, sa.keys.sk_er, hdr, payloads)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        sa.pending[msg_id] = fut
        try:
            for wait in RETRANSMIT:
                self.send(data, sa.peer, sa.local_port)
                try:
                    await asyncio.wait_for(asyncio.shield(fut), wait)
                    return True
                except TimeoutError:
                    continue
                except asyncio.CancelledError:
                    return False
            return False
        finally:
            sa.pending.pop(msg_id, None)

    async def delete_ike_sa(self, sa: IkeSa, reason: str) -> None:
        """Delete an IKE SA by INFORMATIONAL Delete (RFC 7296 §1.4.1) and forget it."""
        if sa.state == SaState.DELETING:
            return
        self._sa_down(sa, reason)
        try:
            await self._request_peer(sa, [c.Delete(protocol=Protocol.IKE)])
        finally:
            self._forget(sa)

    def revoke(self, issuer_key_id: str, serial: int) -> int:
        """Block (issuer, serial) and start deleting live SAs of that certificate; return their count."""
        self.blocklist.add(issuer_key_id, serial)
        victims = [sa for sa in self.established()
                   if sa.auth and sa.auth.serial == serial and sa.auth.issuer_key_id == issuer_key_id.lower()]
        for sa in victims:
            self._spawn(self.delete_ike_sa(sa, "certificate revoked (pushed)"))
        return len(victims)
