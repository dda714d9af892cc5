"""console: the device key each box paired with

Revision ID: c0002
Revises: c0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("console_boxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_key_der", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_boxes", schema=None) as batch_op:
        batch_op.drop_column("device_key_der")
