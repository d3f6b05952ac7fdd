"""Wiring: one :class:`Response` per deployment (settings, hooks file, store, engine, auditor)."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from ca.errors import PKIError
from ca.ports import ServiceKeys
from response.config import HooksConfig, ResponseSettings
from response.core import AuthorityCore
from response.engine import CHANNEL, ResponseEngine
from response.store import ResponseStore

log = logging.getLogger("ikepki.response")


class Response:
    def __init__(self, deployment: ServiceKeys) -> None:
        self.dep = deployment
        self.settings: ResponseSettings = deployment.settings_for(ResponseSettings, "response")
        self.store = ResponseStore(deployment.db)

    @cached_property
    def hooks(self) -> HooksConfig:
        return HooksConfig(self.dep.path(self.settings.config_file), self.dep.dir,
                           lambda detail: self.audit("hooks-config-refused", "ikepki", "", problem=detail))

    @cached_property
    def engine(self) -> ResponseEngine:
        return ResponseEngine(AuthorityCore(self.dep), self.store, self.audit, self.dep.clock)

    def audit(self, action: str, actor: str, source: str = "", *, channel: str = CHANNEL, **fields: Any) -> None:
        """One row in the audit table and one line in the hash-chained audit log."""
        now = self.dep.clock.now()
        try:
            self.dep.store.add_audit(now, actor[:255], action, channel, source[:255], **fields)
            self.dep.audit.append(now, actor, action, channel, source=source, **fields)
        except PKIError as exc:
            log.error("audit of %s failed: %s", action, exc.detail)
            raise
