"""OIDC tables: tokens already used (ID tokens redeemed once, logout-token jti replay).

Revision ID: oidc_0001
Revises:
Create Date: 2026-12-06 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "oidc_0001"
down_revision = None
branch_labels = ("oidc",)
depends_on = "ca_0003"


def upgrade() -> None:
    op.create_table(
        "oidc_token_uses",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("serial", sa.String(42), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_oidc_token_uses_expires_at", "oidc_token_uses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_oidc_token_uses_expires_at", "oidc_token_uses")
    op.drop_table("oidc_token_uses")
