"""Bundled IKEv2 responder (RFC 7296) acting as a relying party of ikepki; see README.md."""
