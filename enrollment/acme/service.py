"""The ACME protocol logic (RFC 8555), independent of the HTTP framework: the entry point and routing.
The protocol parts are :mod:`~enrollment.acme.verification`, :mod:`~enrollment.acme.accounts`,
:mod:`~enrollment.acme.orders`, :mod:`~enrollment.acme.authorizations` and :mod:`~enrollment.acme.revocation`.

``AcmeService.handle(ctx)`` is synchronous (it touches the database and the HSM) and is run
in a worker thread by ``enrollment.acme.app``. Every response carries a fresh
``Replay-Nonce`` and ``Link: <directory>;rel="index"`` (§6.5, §7.1).
"""

from __future__ import annotations

from typing import Any

from ca.errors import PKIError
from ca.ports import CoreServices
from enrollment.acme import messages as m
from enrollment.acme.accounts import Accounts
from enrollment.acme.authorizations import Authorizations
from enrollment.acme.base import AccountCache, AcmeBase, RateLimiter, RequestContext, Response, Signed, log
from enrollment.acme.challenges import ChallengeRegistry
from enrollment.acme.orders import Orders
from enrollment.acme.problems import AcmeProblem, from_pki_error
from enrollment.acme.revocation import Revocation, ari_cert_id
from enrollment.acme.settings import AcmeSettings
from enrollment.acme.store import AcmeStore
from enrollment.acme.validation_queue import FairValidationQueue
from enrollment.acme.verification import Verification


class AcmeService(Verification, Accounts, Orders, Authorizations, Revocation, AcmeBase):
    """The ACME server: one entry point (:meth:`handle`), routing to the protocol parts."""

    def __init__(self, deployment: CoreServices, settings: AcmeSettings, registry: ChallengeRegistry) -> None:
        self.dep = deployment
        self.settings = settings
        self.registry = registry
        self.store = AcmeStore(deployment.db)
        self.accounts = AccountCache()
        self.limiter = RateLimiter(settings.rate_limit_window_seconds)
        self.validations = FairValidationQueue(settings.validation_workers, settings.validation_per_account,
                                               settings.validation_queue_per_account, settings.validation_queue_max)
        for name in settings.profiles:
            deployment.authority.profile(name)  # fail closed on unknown profile names

    # -- entry point ----------------------------------------------------------------------------

    def handle(self, ctx: RequestContext) -> Response:
        urls = m.Urls(ctx.base)
        try:
            resp = self._dispatch(ctx, urls)
        except AcmeProblem as problem:
            resp = self._problem(problem)
        except PKIError as exc:
            resp = self._problem(from_pki_error(exc))
        except Exception:
            log.exception("acme: internal error on %s %s", ctx.method, ctx.path)
            resp = self._problem(AcmeProblem("serverInternal", "internal error", 500))
        return self._decorate(resp, urls)

    def too_large(self, ctx: RequestContext) -> Response:
        problem = AcmeProblem("payloadTooLarge", f"request body exceeds {self.settings.max_body_bytes} bytes", 413)
        return self._decorate(self._problem(problem), m.Urls(ctx.base))

    def _decorate(self, resp: Response, urls: m.Urls) -> Response:
        try:
            resp.headers["Replay-Nonce"] = self.store.new_nonce(self.settings.nonce_lifetime_seconds)
        except PKIError:
            resp.headers.setdefault("Retry-After", "5")
        resp.links.append(f'<{urls.directory}>;rel="index"')
        return resp

    def _problem(self, problem: AcmeProblem) -> Response:
        resp = Response(problem.status, problem.document(), "application/problem+json", dict(problem.headers))
        if problem.retry_after is not None:
            resp.headers["Retry-After"] = str(problem.retry_after)
        return resp

    def _dispatch(self, ctx: RequestContext, urls: m.Urls) -> Response:
        path, method = ctx.path, ctx.method
        self._rate_limit(ctx, None)
        if path == "/directory":
            self._method(ctx, "GET", "HEAD")
            return Response(200, self.directory(urls))
        if path == "/new-nonce":
            self._method(ctx, "GET", "HEAD")
            return Response(200 if method == "HEAD" else 204, None, headers={"Cache-Control": "no-store"})
        if path.startswith("/renewal-info/"):
            self._method(ctx, "GET", "HEAD")
            return self.renewal_info(path[len("/renewal-info/"):])
        route = self._route(path)
        if route is None:
            raise AcmeProblem("notFound", f"no ACME resource at {path[:100]}", 404)
        self._method(ctx, "POST")
        signed = self._authenticate(ctx, urls)
        handler, arg = route
        return handler(ctx, urls, signed, arg)  # type: ignore[no-any-return]

    def _method(self, ctx: RequestContext, *allowed: str) -> None:
        if ctx.method not in allowed:
            raise AcmeProblem("methodNotAllowed", f"use {' or '.join(allowed)} here", 405,
                              headers={"Allow": ", ".join(allowed)})

    def _route(self, path: str) -> tuple[Any, str] | None:
        fixed = {"/new-account": self.new_account, "/new-order": self.new_order, "/revoke-cert": self.revoke_cert,
                 "/key-change": self.key_change}
        if path in fixed:
            return fixed[path], ""
        parts = path.strip("/").split("/")
        table = {("acct", 2): self.account, ("acct", 3): self.account_orders, ("order", 2): self.order,
                 ("order", 3): self.finalize, ("authz", 2): self.authz, ("chall", 2): self.challenge,
                 ("cert", 2): self.certificate}
        handler = table.get((parts[0], len(parts)))
        if handler is None or not parts[1] or len(parts[1]) > 64:
            return None
        if len(parts) == 3 and parts[2] != {"acct": "orders", "order": "finalize"}[parts[0]]:
            return None
        return handler, parts[1]


__all__ = ["AcmeService", "RequestContext", "Response", "Signed", "ari_cert_id"]
