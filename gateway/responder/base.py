"""Shared machinery of the IKEv2 responder: configuration, datagram entry, SK replies,
message-ID window, CHILD_SA negotiation and our own INFORMATIONAL requests.

Responses go to the source address/port of the request (RFC 7296 §2.11, §2.23). Message
IDs use a window of 1 (§2.3): the last response is cached and re-sent for a duplicate
request; anything else out of order is dropped. Unauthenticated garbage never gets an
answer except where §2.21.1 asks for one (errors to a parseable IKE_SA_INIT).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from ca.identity import Identity, IdType, identities_of
from gateway import events as ev
from gateway.certs import key_id, spki_sha1
from gateway.clock import Clock, SystemClock
from gateway.events import EventLog
from gateway.ikev2 import codec as c
from gateway.ikev2.auth import PrivateKey
from gateway.ikev2.constants import HEADER_LEN, Exchange, HashAlg, PayloadType, Protocol
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.crypto import (
    open_sk,
    seal,
    seal_fragments,
)
from gateway.ikev2.proposals import Preferences, select_esp
from gateway.ikev2.sa import Address, ChildSa, IkeSa, SaState
from gateway.policy import Policy, Rule, Selector, narrow
from gateway.radius import packet as rp
from gateway.radius.client import NoAnswer
from gateway.radius.config import EapConfig
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
    eap: EapConfig | None = None  # EAP relayed to RADIUS (RFC 7296 §2.16, RFC 3579); None = certificates only


class Refused(Exception):
    """Stop the exchange and answer with a single error notify (RFC 7296 §2.21)."""

    def __init__(self, notify: int, reason: str, data: bytes = b"", *, end_sa: bool = False) -> None:
        super().__init__(reason)
        self.notify, self.reason, self.data = notify, reason, data
        self.end_sa = end_sa or reason.startswith("revoked")  # also delete the IKE SA after answering


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


class ResponderBase:
    """All IKE SAs of one gateway; feed datagrams to :meth:`receive`. The exchanges live in
    one mixin module each (ike_sa_init, ike_auth, create_child_sa, informational)."""

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

    @property
    def eap_cfg(self) -> EapConfig | None:
        return self.cfg.eap

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

    # ----------------------------------------------------------------- exchanges (mixins)
    def _ike_sa_init(self, data: bytes, hdr: c.Header, peer: Address, port: int) -> None:
        raise NotImplementedError

    async def _ike_auth(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address
                        ) -> None:
        raise NotImplementedError

    async def _create_child_sa(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...],
                               peer: Address) -> None:
        raise NotImplementedError

    def _informational(self, sa: IkeSa, hdr: c.Header, payloads: tuple[c.Payload, ...], peer: Address,
                       port: int) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- revocation
    async def _check_revocation(self, leaf: x509.Certificate, issuer: x509.Certificate) -> None:
        """Pushed block list first, then OCSP (see :mod:`gateway.revocation`)."""
        if self.blocklist.blocks(key_id(issuer), leaf.serial_number):
            raise Refused(N.AUTHENTICATION_FAILED, "certificate revoked (pushed)")
        try:
            await self.ocsp.check(leaf, issuer)
        except Revoked as exc:
            raise Refused(N.AUTHENTICATION_FAILED, str(exc)) from exc

    async def _recheck_peer(self, sa: IkeSa, exchange: str) -> None:
        """Re-evaluate the peer at every rekey (IKE SA and CHILD_SA, RFC 7296 §1.3.2/§1.3.3): device
        posture (issue 17) lives in the certificate and in pushed events, so this is the certificate
        re-checked: pushed revocations/holds (a posture downgrade holds the device's certificates) and
        OCSP; and its validity (a posture certificate never outlives its TPM evidence, so an expired one
        means expired evidence). Refusal ends the IKE SA."""
        auth = sa.auth
        if auth is None or auth.cert is None or auth.issuer is None:
            return
        try:
            await self._check_revocation(auth.cert, auth.issuer)
        except Refused as r:
            raise Refused(N.NO_PROPOSAL_CHOSEN, f"revoked at {exchange}: {r.reason}") from r
        if self.clock.now() >= auth.cert.not_valid_after_utc:
            raise Refused(N.NO_PROPOSAL_CHOSEN, f"certificate expired at {exchange} (posture evidence expired)",
                          end_sa=True)

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
        allowed_remote = rule.remote_ts
        if sa.virtual_ip is not None:  # the peer's side is its virtual IP (RFC 7296 §2.19)
            vip = Selector.parse(f"{sa.virtual_ip}/32")
            allowed_remote = tuple(s for s in (vip.intersect(a) for a in rule.remote_ts) if s is not None)
        remote, local = narrow(tsi.selectors, allowed_remote), narrow(tsr.selectors, rule.local_ts)
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

    def _sa_down(self, sa: IkeSa, reason: str) -> None:
        sa.state = SaState.DELETING
        self.log.emit(ev.SA_DOWN, ike_sa=sa.name, reason=reason,
                      peer_id=str(sa.auth.identity) if sa.auth else None,
                      serial=sa.auth.serial_hex if sa.auth else None)
        if sa.acct_session_id and not any(o is not sa and o.acct_session_id == sa.acct_session_id
                                          and o.state == SaState.ESTABLISHED for o in self.sas.values()):
            cause = {"deleted by peer": 1, "session timeout": 5, "radius disconnect": 6}.get(reason, 6)
            self._spawn(self._account(sa, 2, cause))

    # ----------------------------------------------------------------- RADIUS accounting (RFC 2866)
    def _session_started(self, sa: IkeSa) -> None:
        """Accounting Start, Interim-Update timer and the Session-Timeout deadline of an EAP session."""
        assert sa.auth is not None
        sa.acct_session_id = sa.acct_session_id or f"{sa.spi_i.hex()}-{sa.spi_r.hex()}"
        self._spawn(self._account(sa, 1))
        grant = sa.auth.radius
        loop = asyncio.get_running_loop()
        interim = (grant.interim_interval if grant and grant.interim_interval else 0) or (
            self.eap_cfg.interim_interval if self.eap_cfg else 0)
        if interim:
            self._spawn(self._interim_loop(sa.acct_session_id, max(float(interim), 1.0)))
        if sa.auth_lifetime:
            grace = max(10.0, sa.auth_lifetime * 0.1)
            loop.call_later(sa.auth_lifetime + grace, self._auth_expired, sa.acct_session_id)

    def _by_session(self, session_id: str) -> list[IkeSa]:
        return [s for s in self.sas.values() if s.acct_session_id == session_id and s.state == SaState.ESTABLISHED]

    def _auth_expired(self, session_id: str) -> None:
        """RFC 4478: the initiator did not re-authenticate within AUTH_LIFETIME: delete the SA."""
        for sa in self._by_session(session_id):
            self.log.emit(ev.REAUTH_DUE, ike_sa=sa.name, peer_id=str(sa.auth.identity) if sa.auth else None)
            self._spawn(self.delete_ike_sa(sa, "session timeout"))

    async def _interim_loop(self, session_id: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            live = self._by_session(session_id)
            if not live:
                return
            await self._account(live[0], 3)

    async def _account(self, sa: IkeSa, status: int, cause: int | None = None) -> None:
        """Accounting-Request Start (1) / Stop (2) / Interim-Update (3), RFC 2866 §5.1."""
        cfg = self.eap_cfg
        if cfg is None or cfg.accounting is None or sa.auth is None:
            return
        grant = sa.auth.radius
        attrs: list[tuple[int, bytes]] = [
            (rp.Attr.ACCT_STATUS_TYPE, rp.u32(status)),
            (rp.Attr.ACCT_SESSION_ID, sa.acct_session_id.encode()),
            (rp.Attr.USER_NAME, (sa.auth.eap_identity or str(sa.auth.identity)).encode()[:253]),
            (rp.Attr.NAS_IDENTIFIER, cfg.nas_identifier.encode()[:253]),
            (rp.Attr.NAS_PORT_TYPE, rp.u32(5)),
            (rp.Attr.CALLING_STATION_ID, f"{sa.peer[0]}[{sa.peer[1]}]".encode()),
            (rp.Attr.EVENT_TIMESTAMP, rp.u32(int(self.clock.now().timestamp()))),
            *[(rp.Attr.CLASS, v) for v in (grant.class_raw if grant else ())]]
        if sa.virtual_ip:
            attrs.append((rp.Attr.FRAMED_IP_ADDRESS, ipaddress.IPv4Address(sa.virtual_ip).packed))
        if status != 1 and sa.established is not None:
            attrs.append((rp.Attr.ACCT_SESSION_TIME,
                          rp.u32(max(0, int((self.clock.now() - sa.established).total_seconds())))))
        if cause is not None:
            attrs.append((rp.Attr.ACCT_TERMINATE_CAUSE, rp.u32(cause)))
        name = {1: "Start", 2: "Stop", 3: "Interim-Update"}[status]
        try:
            answer = await cfg.accounting.transact(rp.Code.ACCOUNTING_REQUEST, attrs, require_ma=False)
        except NoAnswer as exc:
            self.log.emit(ev.ACCOUNTING, ike_sa=sa.name, status=name, session_id=sa.acct_session_id,
                          ok=False, error=str(exc))
            return
        self.log.emit(ev.ACCOUNTING, ike_sa=sa.name, status=name, session_id=sa.acct_session_id, ok=True,
                      server=answer.server.label)

    def disconnect(self, user_name: str | None, session_id: str | None, framed_ip: str | None) -> list[IkeSa]:
        """RFC 5176 §3: the established SAs a Disconnect-Request names (every given attribute must
        match); each gets an INFORMATIONAL Delete."""
        if not (user_name or session_id or framed_ip):
            return []
        hits = []
        for sa in self.established():
            a = sa.auth
            if a is None or not a.eap_method:
                continue
            if user_name is not None and a.eap_identity != user_name:
                continue
            if session_id is not None and sa.acct_session_id != session_id:
                continue
            if framed_ip is not None and sa.virtual_ip != framed_ip:
                continue
            hits.append(sa)
        for sa in hits:
            self._spawn(self.delete_ike_sa(sa, "radius disconnect"))
        return hits

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
