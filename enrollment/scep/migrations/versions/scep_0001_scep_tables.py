"""scep tables: one-time challenges and enrollment transactions

Revision ID: scep_0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "scep_0001"
down_revision = None
branch_labels = ("scep",)
depends_on = "ca_0001"


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "scep_challenges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        _ts("created_at"), _ts("expires_at"), _ts("used_at", True),
        sa.Column("used_by", sa.String(128), nullable=True),
    )
    op.create_table(
        "scep_transactions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("transaction_id", sa.String(128), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("signer_der", sa.LargeBinary(), nullable=False),
        sa.Column("cipher", sa.String(32), nullable=False),
        sa.Column("serial", sa.String(42), nullable=True),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        _ts("created_at"), _ts("updated_at"),
        sa.UniqueConstraint("transaction_id", "key_sha256", name="uq_scep_transactions_tid_key"),
    )
    op.create_index("ix_scep_transactions_transaction_id", "scep_transactions", ["transaction_id"])
    op.create_index("ix_scep_transactions_status", "scep_transactions", ["status"])


def downgrade() -> None:
    op.drop_table("scep_transactions")
    op.drop_table("scep_challenges")
