"""CREATE_CHILD_SA (RFC 7296 §1.3): new and rekeyed CHILD_SAs, IKE SA rekey."""

from __future__ import annotations

import os

from gateway import events as ev
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.constants import Protocol
from gateway.ikev2.crypto import (
    DhPrivate,
    KeyExchangeError,
    derive_keys,
    skeyseed_rekey,
)
from gateway.ikev2.proposals import select_ike
from gateway.ikev2.sa import Address, IkeSa, SaState
from gateway.responder.base import Refused, ResponderBase


class CreateChildSa(ResponderBase):
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
                await self._recheck_peer(sa, "CHILD_SA exchange")
                self._child_exchange(sa, hdr, payloads, nonce, peer)
        except Refused as r:
            self._reply_sk(sa, hdr, peer, [c.Notify(r.notify, r.data)])
            if r.end_sa:
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
        """IKE SA rekey (RFC 7296 §1.3.2, keys §2.18); the peer is re-checked first (:meth:`_recheck_peer`)."""
        assert sa.auth is not None
        await self._recheck_peer(sa, "IKE rekey")
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
                    fragmentation=sa.fragmentation, peer_behind_nat=sa.peer_behind_nat,
                    acct_session_id=sa.acct_session_id, virtual_ip=sa.virtual_ip, auth_lifetime=sa.auth_lifetime)
        self.sas[spi_r] = new
        sa.state, sa.children = SaState.REKEYED, {}
        self._schedule_expiry(sa, 30.0)
        self.log.emit(ev.REKEY, ike_sa=sa.name, new_ike_sa=new.name, peer_id=str(sa.auth.identity),
                      serial=sa.auth.serial_hex)

