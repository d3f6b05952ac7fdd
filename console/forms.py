"""Bounded parsing of the console's HTML form posts (``application/x-www-form-urlencoded``,
WHATWG URL Standard §5.1) and of the revoke selector they carry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from ca.errors import ErrorKind, PKIError
from ca.model import parse_serial
from ca.revocation import Selector

MAX_FIELDS = 64
MAX_VALUE = 512  # per field, except those named in LONG_FIELDS
LONG_FIELDS = {"serials": 64 * 1024}
MAX_SERIALS = 2000
_SPLIT = re.compile(r"[\s,;]+")


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """Field name -> value (the first of repeated names). Refuses other content types, more
    than MAX_FIELDS fields, over-long values and undecodable bytes with BAD_REQUEST."""
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise PKIError(ErrorKind.BAD_REQUEST, "expected an HTML form (application/x-www-form-urlencoded)")
    try:
        text = body.decode("ascii")  # browsers percent-encode everything else
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                          encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise PKIError(ErrorKind.BAD_REQUEST, "malformed form body") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if len(name) > 64:
            raise PKIError(ErrorKind.BAD_REQUEST, "form field name too long")
        if len(value) > LONG_FIELDS.get(name, MAX_VALUE):
            raise PKIError(ErrorKind.BAD_REQUEST, f"form field {name!r} too long")
        if "\x00" in value:
            raise PKIError(ErrorKind.BAD_REQUEST, f"form field {name!r} holds a NUL character")
        out.setdefault(name, value)
    return out


def parse_serial_list(text: str) -> tuple[int, ...]:
    """Hex serials separated by white space, commas or semicolons (``0x`` / colons allowed)."""
    items = [t for t in _SPLIT.split(text.strip()) if t]
    if len(items) > MAX_SERIALS:
        raise PKIError(ErrorKind.BAD_REQUEST, f"at most {MAX_SERIALS} serials per console revocation "
                                              "(use `ikepki revoke --from-file` for more)")
    return tuple(dict.fromkeys(parse_serial(t) for t in items))


@dataclass(frozen=True)
class RevokeForm:
    """A revoke / hold request as the console's form states it (the selectors of ``ikepki revoke``)."""

    selector: Selector
    hold: bool
    reason: str | None
    block_device: bool

    FIELDS = ("serials", "device_id", "identity", "user", "profile", "subject_contains", "san_contains",
              "all_of_profile", "action", "reason", "block_device")

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> RevokeForm:
        def text(name: str) -> str | None:
            value = form.get(name, "").strip()
            return value or None

        action = form.get("action", "revoke")
        if action not in ("revoke", "hold"):
            raise PKIError(ErrorKind.BAD_REQUEST, "action is revoke or hold")
        sel = Selector(serials=parse_serial_list(form.get("serials", "")), device_id=text("device_id"),
                       identity=text("identity"), user=text("user"), profile=text("profile"),
                       subject_contains=text("subject_contains"), san_contains=text("san_contains"),
                       all_of_profile=form.get("all_of_profile") == "on")
        return cls(sel, action == "hold", None if action == "hold" else text("reason"),
                   form.get("block_device") == "on")

    def echo(self) -> dict[str, str]:
        """The form's fields again (hidden inputs of the confirmation form)."""
        s = self.selector
        out = {"serials": " ".join(format(x, "x") for x in s.serials), "device_id": s.device_id or "",
               "identity": s.identity or "", "user": s.user or "", "profile": s.profile or "",
               "subject_contains": s.subject_contains or "",
               "san_contains": s.san_contains or "", "action": "hold" if self.hold else "revoke",
               "reason": self.reason or ""}
        if s.all_of_profile:
            out["all_of_profile"] = "on"
        if self.block_device:
            out["block_device"] = "on"
        return out
