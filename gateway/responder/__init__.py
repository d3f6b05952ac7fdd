"""The IKEv2 responder: exchanges of RFC 7296 §1.2-§1.5 on top of the codec and crypto,
one module per exchange (see :mod:`gateway.responder.base` for the shared machinery)."""

from gateway.responder.base import Refused, ResponderConfig, Sender
from gateway.responder.create_child_sa import CreateChildSa
from gateway.responder.ike_auth import IkeAuth
from gateway.responder.ike_sa_init import IkeSaInit
from gateway.responder.informational import Informational

__all__ = ["Refused", "Responder", "ResponderConfig", "Sender"]


class Responder(IkeSaInit, IkeAuth, CreateChildSa, Informational):
    """All IKE SAs of one gateway; feed datagrams to :meth:`receive`."""
