"""Counts per subscription that read an index range instead of every box: the subscription a
certificate was issued under, and boxes indexed by subscription and state

The issuance budget counted a subscription's certificates of the last day by joining every box of
the subscription to its certificates, and registration counted a subscription's active boxes by
reading each box's row: both grew with the subscription, and a herd of 10,000 boxes of one
subscription slowed from 80 to 30 new certificates a second as it went (bench/cloud_x509.py).
Certificates now carry the subscription they were issued under (filled in for the old ones from
their box), indexed with their time; boxes are indexed by subscription and state, which answers
the count alone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscription_code", sa.String(length=128), nullable=True))
    op.execute(
        "UPDATE certificates SET subscription_code = "
        "(SELECT boxes.subscription_code FROM boxes WHERE boxes.box_id = certificates.box_id)"
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_certificates_subscription_created", ["subscription_code", "created_at"]
        )
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.create_index("ix_boxes_subscription_state", ["subscription_code", "state"])


def downgrade() -> None:
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.drop_index("ix_boxes_subscription_state")
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_subscription_created")
        batch_op.drop_column("subscription_code")
