"""scep: remove challenge passwords from stored CSRs (issue 21)

Rows written before this revision kept the CSR with its challengePassword attribute; the
password (one-time or the profile's static secret) is removed from every stored CSR.

Revision ID: scep_0002
Revises: scep_0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "scep_0002"
down_revision = "scep_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from ca.csr import without_challenge_password
    from ca.errors import PKIError

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, csr_der FROM scep_transactions")).fetchall()
    for row_id, der in rows:
        try:
            redacted = without_challenge_password(bytes(der))
        except PKIError:
            continue  # not a CSR we can read: leave it (it was verified on receipt)
        if redacted != bytes(der):
            conn.execute(sa.text("UPDATE scep_transactions SET csr_der = :d WHERE id = :i"),
                         {"d": redacted, "i": row_id})


def downgrade() -> None:
    pass  # the removed passwords cannot (and must not) come back
