"""Authorizations and challenges (RFC 8555 §7.5): reading and deactivating authorizations, answering
challenges, validation by the registered validators in a worker pool."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from enrollment.acme import messages as m
from enrollment.acme.base import AcmeBase, RequestContext, Response, Signed, log
from enrollment.acme.model import Account, Authz, Challenge
from enrollment.acme.problems import AcmeProblem, malformed, unauthorized


class Authorizations(AcmeBase):
    # -- authorizations and challenges (§7.5) ---------------------------------------------------

    def _load_authz(self, s: Signed, authz_id: str, authz: Authz | None = None) -> Authz:
        """The authorization (``authz`` when the caller has just read it), checked to be the
        signer's; a pending one past ``expires`` becomes expired."""
        authz = authz or self.store.authz(authz_id)
        if authz is None:
            raise AcmeProblem("notFound", "no such authorization", 404)
        if s.account is None or authz.account_id != s.account.id:
            raise unauthorized("this authorization belongs to another account")
        if authz.status == "pending" and authz.expires <= self.dep.clock.now():
            self.store.set_authz_status(authz.id, ("pending",), "expired")
            authz = self.store.authz(authz_id) or authz
        return authz

    def stale_after(self) -> timedelta:
        """How long a challenge may stay processing: the longest wait in its account's queue plus
        its own run (each ``validation_timeout``), three times over, plus a minute."""
        rounds = self.settings.validation_queue_per_account // max(1, self.settings.validation_per_account) + 1
        return timedelta(seconds=3 * rounds * self.settings.validation_timeout + 60)

    def _reap_stale(self, authz: Authz, challenges: list[Challenge]) -> bool:
        """A validation still processing long after its timeout was lost (its replica died):
        processing → invalid, so the client learns it and can start a new order."""
        now = self.dep.clock.now()
        limit = self.stale_after()
        reaped = False
        for ch in challenges:
            if ch.status == "processing" and ch.validated is not None and now - ch.validated > limit:
                error = AcmeProblem("serverInternal", "the validation was interrupted; create a new order",
                                    500).document()
                error["identifier"] = authz.identifier.wire()
                self.store.finish_challenge(ch, authz, error, now)
                reaped = True
        return reaped

    def authz(self, ctx: RequestContext, urls: m.Urls, s: Signed, authz_id: str) -> Response:
        found = self.store.authz_with_challenges(authz_id)
        authz = self._load_authz(s, authz_id, found[0] if found else None)
        challenges = found[1] if found and authz is found[0] else None
        payload = s.payload
        if payload is not None and "status" in payload:
            if payload["status"] != "deactivated":
                raise malformed("the only status a client may set is deactivated")
            if not self.store.set_authz_status(authz.id, ("pending", "valid"), "deactivated"):
                raise unauthorized(f"an authorization that is {authz.status} cannot be deactivated")
            error = {"type": "urn:ietf:params:acme:error:unauthorized", "status": 403,
                     "detail": "an authorization of this order was deactivated"}
            for status in ("pending", "ready"):  # §7.1.6: an order with a deactivated authorization is invalid
                self.store.transition_order(authz.order_id, status, "invalid", error=error)
            authz = self.store.authz(authz_id) or authz
            challenges = None
        if challenges is None:
            challenges = self.store.challenges(authz.id)
        if authz.status == "pending" and self._reap_stale(authz, challenges):
            authz = self.store.authz(authz_id) or authz
            challenges = self.store.challenges(authz.id)
        headers = {"Retry-After": "1"} if any(c.status == "processing" for c in challenges) else {}
        return Response(200, m.authz_json(authz, challenges, urls), headers=headers)

    def challenge(self, ctx: RequestContext, urls: m.Urls, s: Signed, challenge_id: str) -> Response:
        """§7.5.1: a POST with a JSON object starts validation; POST-as-GET only reads."""
        found = self.store.challenge_with_authz(challenge_id)
        if found is None:
            raise AcmeProblem("notFound", "no such challenge", 404)
        challenge, authz = found[0], self._load_authz(s, found[0].authz_id, found[1])
        assert s.account is not None
        if s.payload is not None and challenge.status == "pending":
            if authz.status != "pending":
                raise malformed(f"the authorization is {authz.status}")
            account, payload, started = s.account, s.payload, challenge
            if not self.validations.has_room(account.id):
                raise AcmeProblem("rateLimited", "too many validations pending for this account; retry later", 429,
                                  retry_after=max(1, int(self.settings.validation_timeout)))
            now = self.dep.clock.now()
            if self.store.start_challenge(challenge.id, authz.id, now):
                def job() -> None:
                    self._validate(started, authz, account, payload)
                if self.validations.submit(account.id, job):
                    challenge = replace(challenge, status="processing", validated=now)  # what start_challenge wrote
                else:  # filled up since has_room: fail, recorded
                    error = AcmeProblem("rateLimited", "too many validations pending; create a new order").document()
                    error["identifier"] = authz.identifier.wire()
                    self.store.finish_challenge(started, authz, error, self.dep.clock.now())
                    challenge = self.store.challenge(challenge_id) or challenge
            else:
                challenge = self.store.challenge(challenge_id) or challenge
        links = [f'<{urls.authz(authz.id)}>;rel="up"']
        headers = {"Retry-After": "1"} if challenge.status == "processing" else {}
        return Response(200, m.challenge_json(challenge, urls), headers=headers, links=links)

    def _validate(self, challenge: Challenge, authz: Authz, account: Account, payload: dict[str, Any]) -> None:
        """Runs in the validation pool; records the outcome (§7.1.6 state machine)."""
        validator = self.registry.get(challenge.type)
        error, evidence = None, None
        try:
            if validator is None:
                raise RuntimeError(f"no validator for {challenge.type}")
            result = validator.validate(challenge, authz, account, payload)
            if result.ok:
                evidence = result.evidence
            else:
                error = AcmeProblem(result.problem_type or "unauthorized", result.detail).document()
        except Exception:
            log.exception("acme: validator %s failed", challenge.type)
            error = AcmeProblem("serverInternal", "validation failed unexpectedly", 500).document()
        if error is not None:
            error["identifier"] = authz.identifier.wire()
        try:
            self.store.finish_challenge(challenge, authz, error, self.dep.clock.now(), evidence)
        except Exception:
            log.exception("acme: cannot record validation of %s", challenge.id)
