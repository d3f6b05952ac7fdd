"""Revocation push: the outbox worker delivering signed revocation events to VPN gateways
(strongSwan over VICI, the bundled IKEv2 responder, generic signed webhooks)."""
