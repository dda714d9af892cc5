"""The ACME CA's rate limits as buckets the cloud spends, shared by every replica

One row per limit and key (the registered domain, the account, a scope's exact set of names):
when its token bucket is full again, and a time the CA itself asked the cloud to wait until.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ca_buckets",
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("full_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("ca_buckets")
