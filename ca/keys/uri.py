"""RFC 7512 PKCS#11 URIs: ``pkcs11:token=ikepki;object=issuing-ec;type=private?pin-source=file:/p``."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote

_PATH_ATTRS = {"token", "object", "type", "id", "manufacturer", "serial", "model", "library-manufacturer",
               "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id"}
_QUERY_ATTRS = {"pin-source", "pin-value", "module-name", "module-path"}
_SAFE = "-._~:[]@!$'()*+,="  # RFC 7512 §2.3 pk11-pchar (excluding ';', '?', '&', '/')


class Pkcs11UriError(ValueError):
    pass


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI; only the attributes ikepki uses are typed."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def id(self) -> bytes | None:
        raw = self.path.get("id")
        return raw.encode("latin-1") if raw is not None else None

    @property
    def module_path(self) -> str | None:
        return self.query.get("module-path")

    @property
    def pin_source(self) -> str | None:
        return self.query.get("pin-source")

    def __str__(self) -> str:
        path = ";".join(f"{k}={quote(v, safe=_SAFE)}" for k, v in self.path.items())
        query = "&".join(f"{k}={quote(v, safe=_SAFE + '/')}" for k, v in self.query.items())
        return f"pkcs11:{path}" + (f"?{query}" if query else "")

    def without_secrets(self) -> str:
        """The URI with any ``pin-value`` removed, safe to log (RFC 7512 §2.3 warns about it)."""
        query = {k: v for k, v in self.query.items() if k != "pin-value"}
        return str(Pkcs11Uri(dict(self.path), query))


def parse(uri: str) -> Pkcs11Uri:
    """Parse per RFC 7512 §2.3; unknown attributes are kept but vendor ones must use ``x-``."""
    if len(uri) > 4096:
        raise Pkcs11UriError("PKCS#11 URI too long")
    if not uri.startswith("pkcs11:"):
        raise Pkcs11UriError("not a PKCS#11 URI (must start with 'pkcs11:')")
    body = uri[len("pkcs11:"):]
    path_part, _, query_part = body.partition("?")
    path: dict[str, str] = {}
    query: dict[str, str] = {}
    for part, sep, known, out in ((path_part, ";", _PATH_ATTRS, path), (query_part, "&", _QUERY_ATTRS, query)):
        for item in filter(None, part.split(sep)):
            name, eq, value = item.partition("=")
            if not eq:
                raise Pkcs11UriError(f"attribute without value: {name!r}")
            if name not in known and not name.startswith("x-"):
                raise Pkcs11UriError(f"unknown PKCS#11 URI attribute {name!r}")
            if name in out:
                raise Pkcs11UriError(f"duplicate attribute {name!r}")
            out[name] = unquote(value, encoding="latin-1") if name == "id" else unquote(value)
    if path.get("type") not in (None, "private", "public", "cert", "secret-key", "data"):
        raise Pkcs11UriError(f"bad object type {path['type']!r}")
    return Pkcs11Uri(path, query)


def build(token: str, label: str, *, module_path: str | None = None, pin_source: str | None = None,
          key_type: str = "private") -> Pkcs11Uri:
    query = {}
    if module_path:
        query["module-path"] = module_path
    if pin_source:
        query["pin-source"] = pin_source
    return Pkcs11Uri({"token": token, "object": label, "type": key_type}, query)
