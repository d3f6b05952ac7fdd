"""device posture: nonces and evidence/verdict history

Revision ID: posture_0001
Revises:
Create Date: 2026-12-06 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "posture_0001"
down_revision = None
branch_labels = ("posture",)
depends_on = ("ca_0001", "attestation_0001")

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "posture_nonces",
        sa.Column("nonce_sha256", sa.LargeBinary(), primary_key=True),
        sa.Column("ak_serial", sa.String(48), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("consumed_at", TS, nullable=True),
    )
    op.create_index("ix_posture_nonces_expires_at", "posture_nonces", ["expires_at"])
    op.create_table(
        "posture_evidence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("ak_serial", sa.String(48), nullable=False, server_default=""),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("device_class", sa.String(64), nullable=False, server_default=""),
        sa.Column("facts", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("pcrs", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("quote", sa.LargeBinary(), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("event_log_sha256", sa.String(64), nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False, server_default=""),
        sa.Column("issued_serial", sa.String(48), nullable=True),
    )
    op.create_index("ix_posture_evidence_device_id", "posture_evidence", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_posture_evidence_device_id", "posture_evidence")
    op.drop_table("posture_evidence")
    op.drop_index("ix_posture_nonces_expires_at", "posture_nonces")
    op.drop_table("posture_nonces")
