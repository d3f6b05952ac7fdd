"""response tables: incidents, Standard Webhooks message ids, guard lock

Revision ID: response_0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "response_0001"
down_revision = None
branch_labels = ("response",)
depends_on = "ca_0001"


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "response_incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("block_device", sa.Boolean(), nullable=False),
        sa.Column("release_on_resolve", sa.Boolean(), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_value", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("serials", sa.Text(), nullable=False),
        sa.Column("devices", sa.Text(), nullable=False),
        sa.Column("changed", sa.Text(), nullable=False),
        sa.Column("cert_count", sa.Integer(), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("counted_at", ts, nullable=True),
        sa.Column("guard", sa.String(length=255), nullable=True),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("decided_at", ts, nullable=True),
        sa.Column("note", sa.String(length=1024), nullable=True),
        sa.Column("resolved_at", ts, nullable=True),
        sa.Column("error", sa.String(length=1024), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_response_incidents_alert", "response_incidents", ["source", "fingerprint", "rule"])
    op.create_index("ix_response_incidents_status", "response_incidents", ["status", "counted_at"])
    op.create_table(
        "response_message_ids",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("msg_id", sa.String(length=128), nullable=False),
        sa.Column("seen_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("source", "msg_id"),
    )
    op.create_table(
        "response_guard_lock",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(sa.table("response_guard_lock", sa.column("name", sa.String())), [{"name": "global"}])


def downgrade() -> None:
    op.drop_table("response_guard_lock")
    op.drop_table("response_message_ids")
    op.drop_index("ix_response_incidents_status", table_name="response_incidents")
    op.drop_index("ix_response_incidents_alert", table_name="response_incidents")
    op.drop_table("response_incidents")
