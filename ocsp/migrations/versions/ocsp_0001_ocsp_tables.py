"""ocsp tables: published CRLs, leases, delegated OCSP signer certificates

Revision ID: ocsp_0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ocsp_0001"
down_revision = None
branch_labels = ("ocsp",)
depends_on = "ca_0001"


def upgrade() -> None:
    op.create_table(
        "ocsp_crl_publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("base_number", sa.BigInteger(), nullable=True),
        sa.Column("is_base", sa.Boolean(), nullable=False),
        sa.Column("cut_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feed_cursor", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer_id", "crl_number"),
    )
    op.create_index("ix_ocsp_crl_latest", "ocsp_crl_publications", ["issuer_id", "kind", "crl_number"])
    op.create_table(
        "ocsp_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ocsp_signer_certs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer_id", sa.String(length=32), nullable=False),
        sa.Column("serial", sa.String(length=42), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("serial"),
    )
    op.create_index("ix_ocsp_signer_certs_issuer_id", "ocsp_signer_certs", ["issuer_id"])


def downgrade() -> None:
    op.drop_index("ix_ocsp_signer_certs_issuer_id", table_name="ocsp_signer_certs")
    op.drop_table("ocsp_signer_certs")
    op.drop_table("ocsp_leases")
    op.drop_index("ix_ocsp_crl_latest", table_name="ocsp_crl_publications")
    op.drop_table("ocsp_crl_publications")
