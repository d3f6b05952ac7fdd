"""What the admin API does apart from HTTP. Target selection and execution are the core's
(:mod:`ca.revocation`, shared with ``ikepki revoke``), so both front ends select the same certificates."""

from __future__ import annotations

from ca.errors import ErrorKind, PKIError
from ca.model import parse_serial
from ca.revocation import Selector
from enrollment.admin.models import RevocationRequest


def selector(req: RevocationRequest) -> Selector:
    return Selector(tuple(dict.fromkeys(parse_serial(s) for s in req.serials)), req.device_id, req.identity,
                    req.profile, req.subject_contains, req.san_contains, req.expires_before, req.expires_after,
                    req.all_of_profile, req.user)


def check_gateway_url(kind: str, url: str) -> None:
    if kind == "vici" and not url.startswith("unix:///"):
        raise PKIError(ErrorKind.BAD_REQUEST, "a vici gateway URL is unix:///path/to/charon.vici")
    if kind != "vici" and not url.startswith(("http://", "https://")):
        raise PKIError(ErrorKind.BAD_REQUEST, f"a {kind} gateway URL is http(s)://…")
