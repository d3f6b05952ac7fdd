"""acme tables

Revision ID: acme_0001
Revises:
Create Date: 2026-11-27 00:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "acme_0001"
down_revision = None
branch_labels = ("acme",)
depends_on = "ca_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "acme_nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("expires", sa.BigInteger(), nullable=False, index=True),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("thumbprint", sa.String(64), nullable=False, unique=True),
        sa.Column("jwk", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("contact", sa.Text(), nullable=False),
        sa.Column("eab_kid", sa.String(64), nullable=True, index=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "acme_orders",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("authz_ids", sa.Text(), nullable=False),
        sa.Column("expires", TS, nullable=False),
        sa.Column("not_before", TS, nullable=True),
        sa.Column("not_after", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cert_serial", sa.String(42), nullable=True, index=True),
        sa.Column("replaces", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "acme_authzs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False, index=True),
        sa.Column("order_id", sa.String(32), nullable=False, index=True),
        sa.Column("ident_type", sa.String(16), nullable=False),
        sa.Column("ident_value", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires", TS, nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
    )
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("authz_id", sa.String(32), nullable=False, index=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validated", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "acme_eab_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("hmac_key", sa.LargeBinary(), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("expires", TS, nullable=True),
        sa.Column("single_use", sa.Boolean(), nullable=False),
        sa.Column("used_count", sa.Integer(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("acme_eab_keys", "acme_challenges", "acme_authzs", "acme_orders", "acme_accounts", "acme_nonces"):
        op.drop_table(table)
