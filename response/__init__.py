"""Automated incident response: inbound alert webhooks (Alertmanager, Keylime, Standard Webhooks)
turned into holds, revocations and device blocks through the CA core, behind a blast-radius guard.

Dependencies: ``response -> ca`` only (import-linter). Every certificate action goes through the
core's revocation path (:mod:`response.core`), which writes the push outbox in the same
transaction, so gateways learn about it like any other revocation.
"""
