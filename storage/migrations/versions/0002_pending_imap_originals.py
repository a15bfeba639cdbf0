"""pending IMAP originals of purged cases

Revision ID: 0002_pending_originals
Revises: 0001
Create Date: 2026-12-06 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.db import UTCDateTime

revision = "0002_pending_originals"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_originals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("case_number", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_pending_originals_case_number"), "pending_originals", ["case_number"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_originals_case_number"), table_name="pending_originals")
    op.drop_table("pending_originals")
