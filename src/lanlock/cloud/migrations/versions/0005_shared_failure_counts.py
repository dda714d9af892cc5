"""Failed credential attempts counted in the store (shared by replicas), and each box's network

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "failure_counts",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_network", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_boxes_database_network", ["database_uuid", "source_network"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.drop_index("ix_boxes_database_network")
        batch_op.drop_column("source_network")
    op.drop_table("failure_counts")
