"""Protocol packages plug into the service through entry points (group ``ikepki.http``):
each names a callable ``http_mounts(deployment) -> list[HttpMount]``. The core never
imports a protocol package by name, so dependencies keep pointing at ``ca``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ca.deployment import Deployment

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HTTPS, HTTP = "https", "http"
log = logging.getLogger("ikepki.service")


@dataclass(frozen=True)
class HttpMount:
    """An ASGI app served under ``prefix`` on the named listeners ("https", "http")."""

    prefix: str
    app: ASGIApp
    listeners: frozenset[str] = frozenset({HTTPS})
    name: str = ""
    strip_prefix: bool = False  # hand the app paths relative to the prefix


T = TypeVar("T")


class PerDeployment(Generic[T]):
    """A plug-in's one service object per deployment, shared by its entry points (``http_mounts``,
    ``admin_routes``, workers): made on first use, keyed by the deployment object (kept referenced
    beside it, so an id is never reused for another deployment while cached)."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[object, T]] = {}

    def get(self, owner: object, make: Callable[[], T]) -> T:
        """The object made for ``owner`` (a deployment, compared by identity only)."""
        found = self._made.get(id(owner))
        if found is None or found[0] is not owner:
            found = self._made[id(owner)] = (owner, make())
        return found[1]


def _missing_plugin(exc: ModuleNotFoundError, target: str) -> bool:
    return exc.name is not None and target.startswith(exc.name)


def load_mounts(deployment: Deployment, group: str = "ikepki.http", only: set[str] | None = None) -> list[HttpMount]:
    """Every installed protocol's mounts; ``only`` restricts to named plug-ins (e.g. ocsp)."""
    mounts: list[HttpMount] = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if only is not None and ep.name not in only:
            continue
        try:
            factory = ep.load()
        except ModuleNotFoundError as exc:
            if _missing_plugin(exc, ep.value.split(":")[0]):
                log.debug("plug-in %s not present (%s)", ep.name, exc.name)
                continue
            raise
        for mount in factory(deployment):
            mounts.append(mount if mount.name else HttpMount(mount.prefix, mount.app, mount.listeners, ep.name,
                                                            mount.strip_prefix))
    return mounts
