"""DNS-01 challenge values keyed by the scope of the order that wrote them, not by a free name

The DNS derives the only name it answers (``_acme-challenge.<scope>.<zone>``) from the scope, so
a value can never be published under a name of the cloud's choosing. Rows live for minutes
(an order's length): the table is made anew rather than converted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("acme_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_acme_challenges_name"))
    op.drop_table("acme_challenges")
    op.create_table(
        "acme_challenges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=63), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("acme_challenges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_acme_challenges_scope"), ["scope"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("acme_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_acme_challenges_scope"))
    op.drop_table("acme_challenges")
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
