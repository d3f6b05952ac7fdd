"""The directory and accounts (RFC 8555 §7.1.1, §7.3): newAccount with External Account Binding
(§7.3.4), account updates and deactivation, the account's orders, key rollover (§7.3.5)."""

from __future__ import annotations

from typing import Any

from enrollment.acme import messages as m
from enrollment.acme.base import PROFILE_DESCRIPTIONS, AcmeBase, RequestContext, Response, Signed, require_payload
from enrollment.acme.jws import parse_jws, public_jwk, public_key_from_jwk, thumbprint, verify_eab_mac, verify_signature
from enrollment.acme.model import Account
from enrollment.acme.problems import AcmeProblem, malformed, unauthorized
from enrollment.acme.store import IntegrityError


class Accounts(AcmeBase):
    # -- directory and accounts (§7.1.1, §7.3) --------------------------------------------------

    def directory(self, urls: m.Urls) -> dict[str, Any]:
        meta: dict[str, Any] = {"termsOfService": self.settings.terms_of_service,
                                "externalAccountRequired": self.settings.external_account_required,
                                "profiles": {p: PROFILE_DESCRIPTIONS.get(p, p) for p in self.settings.profiles}}
        if self.settings.website:
            meta["website"] = self.settings.website
        return {"newNonce": urls.new_nonce, "newAccount": urls.new_account, "newOrder": urls.new_order,
                "revokeCert": urls.revoke_cert, "keyChange": urls.key_change, "renewalInfo": urls.renewal_info,
                "meta": meta}

    def _account_response(self, account: Account, urls: m.Urls, status: int) -> Response:
        return Response(status, m.account_json(account, urls), headers={"Location": urls.account(account.id)})

    def new_account(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        payload = require_payload(s)
        assert s.jwk is not None
        tp = thumbprint(s.jwk)
        existing = self.store.account_by_thumbprint(tp)
        if existing is not None:
            if existing.status != "valid":
                raise unauthorized(f"account is {existing.status}")
            return self._account_response(existing, urls, 200)
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
        if payload.get("termsOfServiceAgreed") is not True:
            raise AcmeProblem("userActionRequired", "you must agree to the terms of service",
                              instance=self.settings.terms_of_service)
        contact = m.parse_contacts(payload.get("contact"))
        eab_kid = self._check_eab(ctx, payload.get("externalAccountBinding"), s.jwk)
        try:
            account = self.store.create_account(s.jwk, tp, contact, eab_kid, self.dep.clock.now())
        except IntegrityError:
            raced = self.store.account_by_thumbprint(tp)
            if raced is None:
                raise
            return self._account_response(raced, urls, 200)
        if account is None:
            raise unauthorized("the external account key is expired, disabled or already used")
        self.dep.audit.append(self.dep.clock.now(), account.id, "acme-new-account", "acme", source=ctx.source,
                              eab_kid=eab_kid)
        return self._account_response(account, urls, 201)

    def _check_eab(self, ctx: RequestContext, binding: Any, jwk: dict[str, Any]) -> str | None:
        """§7.3.4 External Account Binding: HMAC over the account key by a provisioned key."""
        if binding is None:
            if self.settings.external_account_required:
                raise AcmeProblem("externalAccountRequired", "this server requires external account binding")
            return None
        if not isinstance(binding, dict):
            raise malformed("externalAccountBinding must be a JWS object")
        eab = parse_jws(binding, what="externalAccountBinding")
        if eab.protected.get("url") != ctx.url:
            raise unauthorized("externalAccountBinding url does not match the newAccount URL")
        if "nonce" in eab.protected or "jwk" in eab.protected:
            raise malformed("externalAccountBinding must not carry nonce or jwk")
        kid = eab.protected.get("kid")
        key = self.store.eab_key(kid) if isinstance(kid, str) and 0 < len(kid) <= 64 else None
        if key is None:
            raise unauthorized("unknown external account key id")
        verify_eab_mac(eab, key.hmac_key)
        inner = eab.payload()
        try:
            same = inner is not None and public_jwk(inner) == jwk
        except (KeyError, TypeError):
            same = False
        if not same:
            raise unauthorized("externalAccountBinding payload must be the account key")
        now = self.dep.clock.now()
        if key.disabled or (key.expires is not None and key.expires <= now) or (key.single_use and key.used_count):
            raise unauthorized("the external account key is expired, disabled or already used")
        return key.kid

    def account(self, ctx: RequestContext, urls: m.Urls, s: Signed, account_id: str) -> Response:
        self._own_account(s, account_id)
        self.accounts.drop(account_id)  # answer with the stored account (contact may have changed elsewhere)
        account = self.store.account(account_id)
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account")
        payload = s.payload or {}
        if "status" in payload:
            if payload["status"] != "deactivated":
                raise malformed("the only status a client may set is deactivated")
            account = self.store.update_account(account.id, status="deactivated")
            self.dep.audit.append(self.dep.clock.now(), account.id, "acme-deactivate-account", "acme",
                                  source=ctx.source)
        if "contact" in payload:
            account = self.store.update_account(account.id, contact=m.parse_contacts(payload["contact"]))
        return self._account_response(account, urls, 200)

    def account_orders(self, ctx: RequestContext, urls: m.Urls, s: Signed, account_id: str) -> Response:
        """§7.1.2.1 orders list (newest 1000, one page)."""
        account = self._own_account(s, account_id)
        orders = self.store.orders_for_account(account.id, 1000, 0)
        return Response(200, {"orders": [urls.order(o.id) for o in orders]})

    def _own_account(self, s: Signed, account_id: str) -> Account:
        if s.account is None or s.account.id != account_id:
            raise unauthorized("requests for an account must be signed by that account")
        return s.account

    def key_change(self, ctx: RequestContext, urls: m.Urls, s: Signed, _: str) -> Response:
        """§7.3.5 key rollover: an inner JWS by the new key, carried by the old key's request."""
        assert s.account is not None
        outer = require_payload(s)
        inner = parse_jws(outer, what="inner JWS")
        if "kid" in inner.protected or "jwk" not in inner.protected or "nonce" in inner.protected:
            raise malformed("the inner JWS needs a jwk and no kid or nonce")
        if inner.protected.get("url") != ctx.url:
            raise malformed("the inner JWS url must equal the outer url")
        new_key = public_key_from_jwk(inner.protected["jwk"])
        verify_signature(inner, new_key)
        body = inner.payload() or {}
        if body.get("account") != s.jws.protected.get("kid"):
            raise malformed("keyChange account does not match the signing account")
        old = body.get("oldKey")
        try:
            old_ok = isinstance(old, dict) and thumbprint(old) == s.account.thumbprint
        except (KeyError, TypeError):
            old_ok = False
        if not old_ok:
            raise malformed("keyChange oldKey is not the current account key")
        new_jwk = public_jwk(inner.protected["jwk"])
        new_tp = thumbprint(new_jwk)
        other = self.store.account_by_thumbprint(new_tp)
        if other is not None:
            raise AcmeProblem("conflict", "the new key is already in use by an account", 409,
                              headers={"Location": urls.account(other.id)})
        try:
            changed = self.store.change_key(s.account.id, s.account.thumbprint, new_jwk, new_tp)
        except IntegrityError:
            raise AcmeProblem("conflict", "the new key is already in use by an account", 409) from None
        if not changed:
            raise AcmeProblem("conflict", "the account key changed concurrently", 409)
        self.accounts.drop(s.account.id)
        self.dep.audit.append(self.dep.clock.now(), s.account.id, "acme-key-change", "acme", source=ctx.source)
        account = self.store.account(s.account.id)
        assert account is not None
        return self._account_response(account, urls, 200)
