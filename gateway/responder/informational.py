"""INFORMATIONAL (RFC 7296 §1.4): Delete, DPD, MOBIKE address updates."""

from __future__ import annotations

from gateway import events as ev
from gateway.ikev2 import codec as c
from gateway.ikev2.constants import Notify as N
from gateway.ikev2.constants import Protocol
from gateway.ikev2.sa import Address, IkeSa, SaState
from gateway.responder.base import ResponderBase


class Informational(ResponderBase):
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

