"""An index on certificates by box and time, for the issuance budget's counts

The budget counts a box's (and a subscription's boxes') certificates of the last day before each
issuance, under the scope's lease; without this index both counts scanned every certificate ever
issued.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index("ix_certificates_box_created", ["box_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_box_created")
