"""IKE_SA_INIT (RFC 7296 §1.2, §2.6 cookies, §1.3 INVALID_KE, §2.23 NAT-D)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket

from gateway import events as ev
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.crypto import (
    DhPrivate,
    KeyExchangeError,
    derive_keys,
    skeyseed_initial,
)
from gateway.ikev2.proposals import select_ike
from gateway.ikev2.sa import Address, IkeSa
from gateway.responder.base import COOKIE_VERSION, OUR_HASHES, Refused, ResponderBase, _natd, _unsupported


class IkeSaInit(ResponderBase):
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
        if self.eap_cfg is not None:  # RFC 4739 §3: the initiator answers in IKE_AUTH
            payloads.append(c.Notify(N.MULTIPLE_AUTH_SUPPORTED))
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

