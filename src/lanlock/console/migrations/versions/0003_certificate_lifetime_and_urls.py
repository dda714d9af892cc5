"""console: each box's certificate start (for the early warning) and all of its URLs

Revision ID: c0003
Revises: c0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "c0003"
down_revision = "c0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable and filled by the box's next report: rows of an existing store keep their
    # data, and until then read as an older box's (url only, lifetime unknown).
    with op.batch_alter_table("console_boxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("urls", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_boxes", schema=None) as batch_op:
        batch_op.drop_column("urls")
        batch_op.drop_column("not_before")
