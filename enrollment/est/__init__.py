"""EST server (RFC 7030 with the RFC 8951 clarifications) for MDM enrollment pipelines."""
