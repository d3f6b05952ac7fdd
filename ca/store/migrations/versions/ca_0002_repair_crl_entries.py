"""ca: re-encode stored CRL entries that carry an invalidity date (issue 21)

Before this revision an invalidity date was neither bounded nor correctly encoded for years
< 1000 (``strftime("%Y")``), and the precomputed entry went into every later CRL, which the CRL
lint now refuses to sign. Each such entry is re-encoded with the fixed encoder; an invalidity
date before the certificate's notBefore or after its revocation is dropped (RFC 5280 §5.3.2).

Revision ID: ca_0002
Revises: ca_0001
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "ca_0002"
down_revision = "ca_0001"
branch_labels = None
depends_on = None


_TS = sa.DateTime(timezone=True)
CERTS = sa.table("certificates", sa.column("serial", sa.String), sa.column("not_before", _TS),
                 sa.column("revoked_at", _TS), sa.column("revocation_reason", sa.String),
                 sa.column("invalidity_date", _TS), sa.column("crl_entry_der", sa.LargeBinary))
SKEW = timedelta(minutes=5)  # ca.authority.MAX_CLOCK_SKEW when this revision was written


def upgrade() -> None:
    from ca.clock import as_utc
    from ca.crl_entry import crl_entry_der
    from ca.model import RevocationReason

    conn = op.get_bind()
    rows = conn.execute(sa.select(CERTS).where(CERTS.c.invalidity_date.is_not(None),
                                               CERTS.c.crl_entry_der.is_not(None))).fetchall()
    for row in rows:
        revoked, inv = as_utc(row.revoked_at), as_utc(row.invalidity_date)
        keep = as_utc(row.not_before) <= inv <= revoked + SKEW
        fixed = crl_entry_der(int(row.serial, 16), revoked, RevocationReason[row.revocation_reason].value,
                              inv if keep else None)
        if fixed != bytes(row.crl_entry_der) or not keep:
            conn.execute(sa.update(CERTS).where(CERTS.c.serial == row.serial).values(
                crl_entry_der=fixed, invalidity_date=row.invalidity_date if keep else None))


def downgrade() -> None:
    pass  # the broken encodings are not restored
