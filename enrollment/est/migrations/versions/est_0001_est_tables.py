"""EST tables: MDM device registrations and enrollments pending approval.

Revision ID: est_0001
Revises:
Create Date: 2026-11-27 00:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "est_0001"
down_revision = None
branch_labels = ("est",)
depends_on = "ca_0001"


def upgrade() -> None:
    op.create_table(
        "est_registrations",
        sa.Column("device_id", sa.String(255), primary_key=True),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("sans", sa.Text(), nullable=False),
        sa.Column("ek_fingerprint", sa.String(128), nullable=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("claim_id", sa.String(64), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(255), nullable=True),
        sa.Column("serial", sa.String(42), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "est_pending",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_key", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=True),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("sans", sa.Text(), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("serial", sa.String(42), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_est_pending_status", "est_pending", ["status"])


def downgrade() -> None:
    op.drop_index("ix_est_pending_status", "est_pending")
    op.drop_table("est_pending")
    op.drop_table("est_registrations")
