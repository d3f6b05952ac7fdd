"""Request authentication (RFC 8555 §6.2-6.5): JWS verification, ``kid``/``jwk`` rules, nonces, the
request URL, and per-account/per-address rate limits.

Accounts named by ``kid`` are cached per process (:class:`~enrollment.acme.base.AccountCache`). A cached account is
never trusted on its own: the nonce is redeemed by a DELETE that also requires the account row to
be still ``valid`` with the cached key's thumbprint (``AcmeStore.redeem_nonce``), so a key
rollover (§7.3.5) or deactivation (§7.3.6) made by any worker or replica is seen by the very
statement that consumes the nonce; the request then falls back to reading the account."""

from __future__ import annotations

from typing import Any

from enrollment.acme import messages as m
from enrollment.acme.base import JOSE, JWK_ROUTES, AcmeBase, RequestContext, Signed
from enrollment.acme.jws import Jws, parse_jws, public_jwk, public_key_from_jwk, verify_signature
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
        if has_kid:
            return self._authenticate_kid(ctx, urls, jws, nonce)
        jwk = protected["jwk"]
        key = public_key_from_jwk(jwk)
        jwk = public_jwk(jwk)
        verify_signature(jws, key)
        payload = jws.payload()
        if not self.store.redeem_nonce(nonce):
            raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used")
        self._rate_limit(ctx, None)
        return Signed(jws, payload, None, jwk, key)

    def _authenticate_kid(self, ctx: RequestContext, urls: m.Urls, jws: Jws, nonce: str) -> Signed:
        """A request signed by an account (§6.2 ``kid``): with the account cached, one statement
        (nonce DELETE guarded by the account's key and status); otherwise read it first."""
        account_id = self._account_id(jws.protected["kid"], urls)
        cached = self.accounts.get(account_id)
        if cached is not None:
            key = public_key_from_jwk(cached.jwk)
            try:
                verify_signature(jws, key)
            except AcmeProblem:
                pass  # perhaps signed with a key rolled over elsewhere: decide on the stored account
            else:
                payload = jws.payload()
                if self.store.redeem_nonce(nonce, cached):
                    self._rate_limit(ctx, cached)
                    return Signed(jws, payload, cached, None, key)
            self.accounts.drop(account_id)  # stale, or the nonce was bad: read the account below
        account = self._account_by_id(account_id)
        key = public_key_from_jwk(account.jwk)
        verify_signature(jws, key)
        payload = jws.payload()
        if not self.store.redeem_nonce(nonce):
            raise AcmeProblem("badNonce", "the nonce is unknown, expired or already used")
        self.accounts.put(account)
        self._rate_limit(ctx, account)
        return Signed(jws, payload, account, None, key)

    def _account_id(self, kid: Any, urls: m.Urls) -> str:
        prefix = urls.account("")
        if not isinstance(kid, str) or not kid.startswith(prefix) or len(kid) > len(prefix) + 64:
            raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this server")
        return kid[len(prefix):]

    def _account_by_id(self, account_id: str) -> Account:
        account = self.store.account(account_id)
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
