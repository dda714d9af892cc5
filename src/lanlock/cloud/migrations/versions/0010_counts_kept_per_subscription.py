"""Counts kept per subscription instead of counted per request: its active boxes, and its
certificates over two periods

Registration counted a subscription's active boxes and the issuance budget its certificates of
the window, at every new box: each count read as many index entries as the subscription had
boxes or certificates. On PostgreSQL, whose index-only scans visit the table for rows written
since the last VACUUM, a herd of 8,000 boxes of one subscription spent 2.6 ms of the server's
time per new box in the two counts, 85 % of its statement time (pg_stat_statements,
bench/cloud_x509.py --in-process). The counts are now columns of the subscription, changed in the
transaction that changes what they count.

The certificates' count starts as an upper bound: every certificate of the subscription so far
counts as issued in the period before this one (a period that began with the beginning), so a
subscription near its budget is counted exactly (lanlock.cloud.throttle) until its first period
ends. The two indexes that served only the counts or were a prefix of another go.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("active_boxes", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("issued_period_start", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("issued_last_start", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("issued_this_period", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("issued_last_period", sa.Integer(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE subscriptions SET active_boxes = (SELECT count(*) FROM boxes "
        "WHERE boxes.subscription_code = subscriptions.code AND boxes.state = 'active'), "
        "issued_last_period = (SELECT count(*) FROM certificates "
        "WHERE certificates.subscription_code = subscriptions.code)"
    )
    # Bound as the models bind it (an aware UTC time, stored as each dialect stores it).
    subscriptions = sa.table(
        "subscriptions", sa.column("issued_period_start", sa.DateTime(timezone=True))
    )
    op.execute(subscriptions.update().values(issued_period_start=dt.datetime.now(dt.UTC)))
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.drop_index("ix_boxes_subscription_state")
        batch_op.drop_index("ix_boxes_database_uuid")


def downgrade() -> None:
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.create_index("ix_boxes_database_uuid", ["database_uuid"])
        batch_op.create_index("ix_boxes_subscription_state", ["subscription_code", "state"])
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("issued_last_period")
        batch_op.drop_column("issued_this_period")
        batch_op.drop_column("issued_last_start")
        batch_op.drop_column("issued_period_start")
        batch_op.drop_column("active_boxes")
