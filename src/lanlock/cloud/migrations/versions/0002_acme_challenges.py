"""DNS-01 challenge records shared by the cloud and the DNS server

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("acme_challenges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_acme_challenges_name"), ["name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("acme_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_acme_challenges_name"))
    op.drop_table("acme_challenges")
