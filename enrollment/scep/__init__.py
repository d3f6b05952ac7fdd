"""SCEP server (RFC 8894) issuing from the RSA issuing CA through the Authority."""
