"""cases sent to the executive director alone

Revision ID: 0004_director_only
Revises: 0003_held_message_key
Create Date: 2026-12-06 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_director_only"
down_revision = "0003_held_message_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing cases were never director-only (issue 10): the default fills them.
    with op.batch_alter_table("cases") as batch:
        batch.add_column(
            sa.Column("director_only", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("director_only")
