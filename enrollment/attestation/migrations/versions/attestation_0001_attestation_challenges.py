"""attestation challenge table

Revision ID: attestation_0001
Revises:
Create Date: 2026-11-27 00:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "attestation_0001"
down_revision = None
branch_labels = ("attestation",)
depends_on = "ca_0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attestation_challenges",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("ek_certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("ak_public", sa.LargeBinary(), nullable=False),
        sa.Column("ak_name", sa.LargeBinary(), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("consumed_at", TS, nullable=True),
    )
    op.create_index("ix_attestation_challenges_expires_at", "attestation_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_attestation_challenges_expires_at", "attestation_challenges")
    op.drop_table("attestation_challenges")
