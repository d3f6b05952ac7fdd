"""Request authentication (RFC 8555 §6.2-6.5): JWS verification, ``kid``/``jwk`` rules, nonces, the
request URL, and per-account/per-address rate limits."""

from __future__ import annotations

from typing import Any

from enrollment.acme import messages as m
from enrollment.acme.base import JOSE, JWK_ROUTES, AcmeBase, RequestContext, Signed
from enrollment.acme.jws import parse_jws, public_jwk, public_key_from_jwk, verify_signature
from enrollment.acme.model import Account
from enrollment.acme.problems import AcmeProblem, malformed, unauthorized


class Verification(AcmeBase):
    # -- request authentication (§6.2-6.5) ------------------------------------------------------

    def _authenticate(self, ctx: RequestContext, urls: m.Urls) -> Signed:
        if ctx.content_type.split(";")[0].strip().lower() != JOSE:
            raise AcmeProblem("unsupportedMediaType", f"Content-Type must be {JOSE}", 415)
        jws = parse_jws(ctx.body)
        protected = jws.protected
        if protected.get("url") != ctx.url:
            raise unauthorized("the JWS url header does not match the request URL")
        nonce = protected.get("nonce")
        if not isinstance(nonce, str) or not nonce or len(nonce) > 64:
            raise AcmeProblem("badNonce", "the JWS has no usable nonce")
        has_kid, has_jwk = "kid" in protected, "jwk" in protected
        if has_kid == has_jwk:
            raise malformed("the JWS must carry exactly one of kid and jwk")
        if has_jwk and ctx.path not in JWK_ROUTES:
            raise malformed("this resource requires a kid (account URL), not a jwk")
        if has_kid and ctx.path == "/new-account":
            raise malformed("newAccount must be signed with a jwk")
        account, jwk = None, None
        if has_kid:
            account = self._account_for_kid(protected["kid"], urls)
            key = public_key_from_jwk(account.jwk)
        else:
            jwk = protected["jwk"]
            key = public_key_from_jwk(jwk)
            jwk = public_jwk(jwk)
        verify_signature(jws, key)
        payload = jws.payload()
        if not self.store.redeem_nonce(nonce):
            raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used")
        self._rate_limit(ctx, account)
        return Signed(jws, payload, account, jwk, key)

    def _account_for_kid(self, kid: Any, urls: m.Urls) -> Account:
        prefix = urls.account("")
        if not isinstance(kid, str) or not kid.startswith(prefix) or len(kid) > len(prefix) + 64:
            raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this server")
        account = self.store.account(kid[len(prefix):])
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account")
        if account.status != "valid":
            raise unauthorized(f"account is {account.status}")
        return account

    def _rate_limit(self, ctx: RequestContext, account: Account | None) -> None:
        """Per source address for every request (nonces cost a database write), per account once signed."""
        if account is None:
            wait = self.limiter.hit(f"ip:{ctx.source}", self.settings.rate_limit_per_ip)
        else:
            wait = self.limiter.hit(f"acct:{account.id}", self.settings.rate_limit_per_account)
        if wait is not None:
            raise AcmeProblem("rateLimited", "too many requests; retry later", 429, retry_after=wait)
