"""certificate_users: the identity-provider user (iss, sub, email, groups, device) of a certificate

Revision ID: ca_0003
Revises: ca_0002
Create Date: 2026-12-06 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ca_0003"
down_revision = "ca_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificate_users",
        sa.Column("serial", sa.String(42), sa.ForeignKey("certificates.serial"), primary_key=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("uri", sa.String(1024), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("device", sa.String(255), nullable=True),
        sa.Column("session", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_certificate_users_identity", "certificate_users", ["issuer", "subject"])
    op.create_index("ix_certificate_users_uri", "certificate_users", ["uri"])
    op.create_index("ix_certificate_users_email", "certificate_users", ["email"])
    op.create_index("ix_certificate_users_session", "certificate_users", ["session"])


def downgrade() -> None:
    op.drop_table("certificate_users")
