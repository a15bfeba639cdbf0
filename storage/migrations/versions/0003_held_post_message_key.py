"""held posts keyed by message, so a retried message is held once

Revision ID: 0003_held_message_key
Revises: 0002_pending_originals
Create Date: 2026-12-06 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_held_message_key"
down_revision = "0002_pending_originals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("held_posts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_key", sa.String(length=80), nullable=True))
        # Rows held before this revision have no key (NULLs never collide).
        batch_op.create_index("ix_held_posts_list_key", ["list", "message_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("held_posts", schema=None) as batch_op:
        batch_op.drop_index("ix_held_posts_list_key")
        batch_op.drop_column("message_key")
