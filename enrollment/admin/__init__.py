"""Admin API (``/admin/v1`` on HTTPS): certificates, revocations, devices, gateways, tokens."""
