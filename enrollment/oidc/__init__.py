"""Users from the identity provider: OpenID Connect ID token + CSR -> short-lived ``user``
certificate (``POST /user/v1/certificates``), OIDC Back-Channel Logout -> hold/revoke, and the
``ikepki user`` CLI (RFC 8628 device grant). See README.md in this directory."""
