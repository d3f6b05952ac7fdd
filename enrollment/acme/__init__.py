"""ACME server (RFC 8555) for ikepki: accounts, orders, challenges, EAB, ARI and profiles.

Modules: ``settings`` (configuration), ``records`` (DB rows), ``jws`` (RFC 8555 §6.2 request
authentication), ``problems`` (RFC 7807 / §6.7), ``store`` (persistence), ``challenges``
(validator registry), ``service`` (the protocol logic), ``app`` (ASGI edge), ``routes``
(mount), ``cli`` (``ikepki acme …``).
"""
