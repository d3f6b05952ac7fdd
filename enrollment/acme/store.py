"""Persistence of accounts, orders, authorizations, challenges, nonces and EAB keys.

Every state transition is a conditional UPDATE (``… WHERE status = <expected>``) checked by
rowcount, so concurrent requests and replicas cannot move an object twice (RFC 8555 §7.1.6).
Statements are few per request (``bench/acme_profile.py`` counts them): conditions that span
rows are ``EXISTS`` sub-queries of the one UPDATE/DELETE instead of reads before it, rows of one
kind are inserted with one ``executemany``, objects just written are not read back, and what
one request reads it reads on one connection.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from ca.store.db import Database
from enrollment.acme.model import Account, Authz, Challenge, EabKey, Identifier, Order
from enrollment.acme.records import (
    AcmeAccountRecord,
    AcmeAuthzRecord,
    AcmeChallengeRecord,
    AcmeEabKeyRecord,
    AcmeNonceRecord,
    AcmeOrderRecord,
)

NONCES: Table = AcmeNonceRecord.__table__  # type: ignore[attr-defined]
ACCOUNTS: Table = AcmeAccountRecord.__table__  # type: ignore[attr-defined]
ORDERS: Table = AcmeOrderRecord.__table__  # type: ignore[attr-defined]
AUTHZS: Table = AcmeAuthzRecord.__table__  # type: ignore[attr-defined]
CHALLENGES: Table = AcmeChallengeRecord.__table__  # type: ignore[attr-defined]
EAB_KEYS: Table = AcmeEabKeyRecord.__table__  # type: ignore[attr-defined]
PURGE_EVERY = 50  # batches
NONCE_BATCH = 32

# The statements of every request, built once (building and cache-keying a statement costs more
# than SQLite running it); parameters are bound by name (b_…).
_REDEEM = delete(NONCES).where(NONCES.c.nonce == bindparam("b_nonce"), NONCES.c.expires >= bindparam("b_now"))
_REDEEM_FOR_ACCOUNT = _REDEEM.where(exists().where(
    ACCOUNTS.c.id == bindparam("b_account"), ACCOUNTS.c.thumbprint == bindparam("b_thumbprint"),
    ACCOUNTS.c.status == "valid"))
_ACCOUNT = select(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("b_id"))
_ORDER = select(ORDERS).where(ORDERS.c.id == bindparam("b_id"))
_ORDER_AUTHZS = select(AUTHZS).where(AUTHZS.c.order_id == bindparam("b_id"))
_AUTHZ = select(AUTHZS).where(AUTHZS.c.id == bindparam("b_id"))
_CHALLENGE = select(CHALLENGES).where(CHALLENGES.c.id == bindparam("b_id"))
_CHALLENGES = select(CHALLENGES).where(CHALLENGES.c.authz_id == bindparam("b_id")).order_by(CHALLENGES.c.type)
_ORDER_BY_SERIAL = select(ORDERS).where(ORDERS.c.cert_serial == bindparam("b_serial"))
_TRANSITION = update(ORDERS).where(ORDERS.c.id == bindparam("b_id"), ORDERS.c.status == bindparam("b_expected"))
_sibling = CHALLENGES.alias("sibling")
_START_CHALLENGE = update(CHALLENGES).where(
    CHALLENGES.c.id == bindparam("b_id"), CHALLENGES.c.authz_id == bindparam("b_authz"),
    CHALLENGES.c.status == "pending",
    exists().where(AUTHZS.c.id == bindparam("b_authz"), AUTHZS.c.status == "pending"),
    ~exists().where(_sibling.c.authz_id == bindparam("b_authz"), _sibling.c.status == "processing"),
).values(status="processing", validated=bindparam("b_now"))
_TRANSITION_STATUS = _TRANSITION.values(status=bindparam("b_status"))
_FINISH_CHALLENGE = update(CHALLENGES).where(CHALLENGES.c.id == bindparam("b_id"), CHALLENGES.c.status == "processing")\
    .values(status=bindparam("b_status"), validated=bindparam("b_validated"), error=bindparam("b_error"))
_FINISH_AUTHZ = update(AUTHZS).where(AUTHZS.c.id == bindparam("b_id"), AUTHZS.c.status == "pending")\
    .values(status=bindparam("b_status"), evidence=bindparam("b_evidence"))
_ORDER_READY = update(ORDERS).where(
    ORDERS.c.id == bindparam("b_id"), ORDERS.c.status == "pending",
    ~exists().where(AUTHZS.c.order_id == bindparam("b_id"), AUTHZS.c.status != "valid")).values(status="ready")


def new_id() -> str:
    return secrets.token_urlsafe(16)


class AcmeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._issued = 0
        self._pool: list[tuple[str, int]] = []
        self._pool_lock = threading.Lock()

    # -- nonces (RFC 8555 §6.5) -----------------------------------------------------------------

    def new_nonce(self, lifetime: int) -> str:
        """A nonce already stored (so any replica can redeem it); stored in batches of NONCE_BATCH
        per transaction, handed out from memory while younger than half their lifetime."""
        now = int(time.time())
        with self._pool_lock:
            while self._pool:
                nonce, expires = self._pool.pop()
                if expires - now > lifetime // 2:
                    return nonce
            batch = [(secrets.token_urlsafe(24), now + lifetime) for _ in range(NONCE_BATCH)]
            with self.db.write() as conn:
                conn.execute(insert(NONCES), [{"nonce": n, "expires": e} for n, e in batch])
                self._issued += 1
                if self._issued % PURGE_EVERY == 0:
                    conn.execute(delete(NONCES).where(NONCES.c.expires < now))
            self._pool = batch
            return self._pool.pop()[0]

    def redeem_nonce(self, nonce: str, account: Account | None = None) -> bool:
        """Atomic single use: only the request whose DELETE removed the row may proceed.

        With ``account`` the same statement also requires that account to be still ``valid``
        with the same key (thumbprint): a caller holding a cached account learns in this one
        statement whether a key rollover or deactivation (by any replica) has made it stale.
        False then leaves the nonce unused."""
        params: dict[str, Any] = {"b_nonce": nonce, "b_now": int(time.time())}
        if account is not None:
            params |= {"b_account": account.id, "b_thumbprint": account.thumbprint}
        with self.db.write() as conn:
            return conn.execute(_REDEEM if account is None else _REDEEM_FOR_ACCOUNT, params).rowcount == 1

    # -- accounts -------------------------------------------------------------------------------

    def account(self, account_id: str) -> Account | None:
        with self.db.read() as conn:
            row = conn.execute(_ACCOUNT, {"b_id": account_id}).first()
        return Account.from_row(row) if row else None

    def account_by_thumbprint(self, thumbprint: str) -> Account | None:
        with self.db.read() as conn:
            row = conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.thumbprint == thumbprint)).first()
        return Account.from_row(row) if row else None

    def create_account(self, jwk: dict[str, Any], thumbprint: str, contact: list[str], eab_kid: str | None,
                       now: datetime) -> Account | None:
        """Insert; with ``eab_kid`` consume one use of the EAB key in the same transaction.
        Returns None when the EAB key cannot be used (again); raises IntegrityError on a key race."""
        account_id = new_id()
        with self.db.write() as conn:
            if eab_kid is not None:
                cond = (EAB_KEYS.c.kid == eab_kid) & EAB_KEYS.c.disabled.is_(False) & (
                    EAB_KEYS.c.single_use.is_(False) | (EAB_KEYS.c.used_count == 0)) & (
                    EAB_KEYS.c.expires.is_(None) | (EAB_KEYS.c.expires > now))
                used = conn.execute(update(EAB_KEYS).where(cond).values(used_count=EAB_KEYS.c.used_count + 1))
                if used.rowcount != 1:
                    return None
            conn.execute(insert(ACCOUNTS), {"id": account_id, "thumbprint": thumbprint, "jwk": json.dumps(jwk),
                                            "status": "valid", "contact": json.dumps(contact), "eab_kid": eab_kid,
                                            "created_at": now})
        return self.account(account_id)

    def update_account(self, account_id: str, **values: Any) -> Account:
        if "contact" in values:
            values["contact"] = json.dumps(values["contact"])
        with self.db.write() as conn:
            conn.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == account_id, ACCOUNTS.c.status == "valid")
                         .values(**values))
        account = self.account(account_id)
        assert account is not None
        return account

    def change_key(self, account_id: str, old_thumbprint: str, jwk: dict[str, Any], thumbprint: str) -> bool:
        """§7.3.5: swap keys only if the account still has the old one; IntegrityError if the new key is taken."""
        with self.db.write() as conn:
            result = conn.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == account_id,
                                                         ACCOUNTS.c.thumbprint == old_thumbprint,
                                                         ACCOUNTS.c.status == "valid")
                                  .values(jwk=json.dumps(jwk), thumbprint=thumbprint))
            return result.rowcount == 1

    # -- EAB keys -------------------------------------------------------------------------------

    def add_eab_key(self, kid: str, key: bytes, profile: str, identifiers: Sequence[str],
                    expires: datetime | None, single_use: bool, now: datetime) -> None:
        with self.db.write() as conn:
            conn.execute(insert(EAB_KEYS), {"kid": kid, "hmac_key": key, "profile": profile,
                                            "identifiers": json.dumps(list(identifiers)), "expires": expires,
                                            "single_use": single_use, "used_count": 0, "disabled": False,
                                            "created_at": now})

    def eab_key(self, kid: str) -> EabKey | None:
        with self.db.read() as conn:
            row = conn.execute(select(EAB_KEYS).where(EAB_KEYS.c.kid == kid)).first()
        return EabKey.from_row(row) if row else None

    def eab_keys(self) -> list[EabKey]:
        with self.db.read() as conn:
            return [EabKey.from_row(r) for r in conn.execute(select(EAB_KEYS).order_by(EAB_KEYS.c.created_at))]

    def disable_eab_key(self, kid: str) -> bool:
        with self.db.write() as conn:
            return conn.execute(update(EAB_KEYS).where(EAB_KEYS.c.kid == kid).values(disabled=True)).rowcount == 1

    # -- orders, authorizations, challenges ------------------------------------------------------

    def create_order(self, account_id: str, identifiers: Sequence[Identifier], profile: str, expires: datetime,
                     authz_expires: datetime, challenge_types: Sequence[Sequence[str]], now: datetime,
                     not_before: datetime | None, not_after: datetime | None, replaces: str | None) -> Order:
        """One transaction, one INSERT per table (executemany); the order returned is what was written."""
        order_id = new_id()
        authz_ids = [new_id() for _ in identifiers]
        authz_rows = [{"id": authz_id, "account_id": account_id, "order_id": order_id, "ident_type": ident.type,
                       "ident_value": ident.value, "status": "pending", "expires": authz_expires}
                      for authz_id, ident in zip(authz_ids, identifiers, strict=True)]
        challenge_rows = [{"id": new_id(), "authz_id": authz_id, "type": typ, "token": secrets.token_urlsafe(32),
                           "status": "pending"}
                          for authz_id, types in zip(authz_ids, challenge_types, strict=True) for typ in types]
        order = Order(order_id, account_id, "pending", tuple(identifiers), profile, tuple(authz_ids), expires,
                      not_before, not_after, None, None, replaces)
        with self.db.write() as conn:
            conn.execute(insert(AUTHZS), authz_rows)
            if challenge_rows:
                conn.execute(insert(CHALLENGES), challenge_rows)
            conn.execute(insert(ORDERS), {
                "id": order_id, "account_id": account_id, "status": "pending",
                "identifiers": json.dumps([i.wire() for i in identifiers]), "profile": profile,
                "authz_ids": json.dumps(authz_ids), "expires": expires, "not_before": not_before,
                "not_after": not_after, "replaces": replaces, "created_at": now})
        return order

    def order(self, order_id: str) -> Order | None:
        with self.db.read() as conn:
            row = conn.execute(_ORDER, {"b_id": order_id}).first()
        return Order.from_row(row) if row else None

    def order_with_authzs(self, order_id: str) -> tuple[Order, list[Authz]] | None:
        """An order and its authorizations (in the order's order), read on one connection."""
        with self.db.read() as conn:
            row = conn.execute(_ORDER, {"b_id": order_id}).first()
            if row is None:
                return None
            order = Order.from_row(row)
            rows = {r.id: Authz.from_row(r) for r in conn.execute(_ORDER_AUTHZS, {"b_id": order_id})}
        return order, [rows[i] for i in order.authz_ids if i in rows]

    def authz_with_challenges(self, authz_id: str) -> tuple[Authz, list[Challenge]] | None:
        """An authorization and its challenges, read on one connection."""
        with self.db.read() as conn:
            row = conn.execute(_AUTHZ, {"b_id": authz_id}).first()
            if row is None:
                return None
            return Authz.from_row(row), self._challenges(conn, authz_id)

    def challenge_with_authz(self, challenge_id: str) -> tuple[Challenge, Authz | None] | None:
        """A challenge and its authorization, read on one connection."""
        with self.db.read() as conn:
            row = conn.execute(_CHALLENGE, {"b_id": challenge_id}).first()
            if row is None:
                return None
            authz = conn.execute(_AUTHZ, {"b_id": row.authz_id}).first()
        return Challenge.from_row(row), Authz.from_row(authz) if authz else None

    def orders_for_account(self, account_id: str, limit: int, offset: int) -> list[Order]:
        with self.db.read() as conn:
            rows = conn.execute(select(ORDERS).where(ORDERS.c.account_id == account_id)
                                .order_by(ORDERS.c.created_at, ORDERS.c.id).limit(limit).offset(offset))
            return [Order.from_row(r) for r in rows]

    def authz(self, authz_id: str) -> Authz | None:
        with self.db.read() as conn:
            row = conn.execute(_AUTHZ, {"b_id": authz_id}).first()
        return Authz.from_row(row) if row else None

    def authzs(self, authz_ids: Sequence[str]) -> list[Authz]:
        with self.db.read() as conn:
            rows = {r.id: Authz.from_row(r) for r in conn.execute(select(AUTHZS).where(AUTHZS.c.id.in_(authz_ids)))}
        return [rows[i] for i in authz_ids if i in rows]

    def valid_authz_values(self, account_id: str, now: datetime) -> set[tuple[str, str]]:
        with self.db.read() as conn:
            rows = conn.execute(select(AUTHZS.c.ident_type, AUTHZS.c.ident_value).where(
                AUTHZS.c.account_id == account_id, AUTHZS.c.status == "valid", AUTHZS.c.expires > now))
            return {(r.ident_type, r.ident_value) for r in rows}

    def challenges(self, authz_id: str) -> list[Challenge]:
        with self.db.read() as conn:
            return self._challenges(conn, authz_id)

    @staticmethod
    def _challenges(conn: Any, authz_id: str) -> list[Challenge]:
        rows = conn.execute(_CHALLENGES, {"b_id": authz_id})
        return [Challenge.from_row(r) for r in rows]

    def challenge(self, challenge_id: str) -> Challenge | None:
        with self.db.read() as conn:
            row = conn.execute(_CHALLENGE, {"b_id": challenge_id}).first()
        return Challenge.from_row(row) if row else None

    def start_challenge(self, challenge_id: str, authz_id: str, now: datetime | None = None) -> bool:
        """pending → processing, only while the authorization is pending and no sibling is processing.
        While processing, ``validated`` holds the start time (to detect validations a dead replica left).
        One conditional UPDATE: the authorization and sibling conditions are sub-queries of it."""
        with self.db.write() as conn:  # processing: ``validated`` is the start time
            if not self.db.is_sqlite:  # READ COMMITTED: two siblings started together would each see
                # no other processing; the authorization's row lock serializes them (SQLite: BEGIN IMMEDIATE)
                conn.execute(select(AUTHZS.c.id).where(AUTHZS.c.id == authz_id).with_for_update())
            result = conn.execute(_START_CHALLENGE, {"b_id": challenge_id, "b_authz": authz_id, "b_now": now})
            return result.rowcount == 1

    def finish_challenge(self, challenge: Challenge, authz: Authz, error: dict[str, Any] | None,
                         now: datetime, evidence: dict[str, Any] | None = None) -> None:
        """§7.1.6: challenge processing → valid/invalid; its authorization and order follow."""
        ok = error is None
        with self.db.write() as conn:
            # One finisher per order at a time: under PostgreSQL's READ COMMITTED two validations
            # finishing together (two replicas' workers) would each see the other's authorization
            # still pending and leave the order pending for good. (SQLite: BEGIN IMMEDIATE already.)
            if not self.db.is_sqlite:
                conn.execute(select(ORDERS.c.id).where(ORDERS.c.id == authz.order_id).with_for_update())
            status = "valid" if ok else "invalid"
            conn.execute(_FINISH_CHALLENGE, {"b_id": challenge.id, "b_status": status,
                                             "b_validated": now if ok else None,
                                             "b_error": None if ok else json.dumps(error)})
            decided = conn.execute(_FINISH_AUTHZ, {"b_id": authz.id, "b_status": status,
                                                   "b_evidence": json.dumps(evidence) if ok and evidence else None})
            if not ok and decided.rowcount == 1:  # an authorization already decided leaves the order be
                conn.execute(update(ORDERS).where(ORDERS.c.id == authz.order_id, ORDERS.c.status == "pending")
                             .values(status="invalid", error=json.dumps(error)))
                return
            # ready once no authorization of the order is anything but valid (this one now is)
            conn.execute(_ORDER_READY, {"b_id": authz.order_id})

    def set_authz_status(self, authz_id: str, expected: Sequence[str], status: str) -> bool:
        with self.db.write() as conn:
            return conn.execute(update(AUTHZS).where(AUTHZS.c.id == authz_id, AUTHZS.c.status.in_(expected))
                                .values(status=status)).rowcount == 1

    def transition_order(self, order_id: str, expected: str, status: str, **values: Any) -> bool:
        if "error" in values and values["error"] is not None:
            values["error"] = json.dumps(values["error"])
        stmt = _TRANSITION.values(status=status, **values) if values else _TRANSITION_STATUS
        with self.db.write() as conn:
            return conn.execute(stmt, {"b_id": order_id, "b_expected": expected, "b_status": status}).rowcount == 1

    def order_by_serial(self, serial_hex: str) -> Order | None:
        with self.db.read() as conn:
            row = conn.execute(_ORDER_BY_SERIAL, {"b_serial": serial_hex}).first()
        return Order.from_row(row) if row else None


__all__ = ["AcmeStore", "IntegrityError", "new_id"]
