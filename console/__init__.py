"""The web console for operators and incident responders (``/console`` on the HTTPS listener).

Server-rendered pages (Jinja2, autoescaped) over the core only: certificates, devices, gateways,
the audit log, pending incidents (contributed read-only through the ``ikepki.console_incidents``
entry point group) and revoke / hold with a dry-run preview. No script is needed to use it.
"""
